"""What a result store that wakes waiters announces when it saves (Redis pub/sub,
PostgreSQL ``NOTIFY``): a JSON array of the keys it wrote — ``result:<id>``,
``group:<group>``, ``name:<name>`` — and how a waiter tells whether one concerns it."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any


def names(announcement: Any, wanted: Collection[str]) -> bool:
    """``announcement`` names one of ``wanted``; with nothing wanted, every announcement
    does. One that cannot be read is taken as news (the waiter just looks)."""
    if not wanted:
        return True
    try:
        written = json.loads(announcement)
    except ValueError:
        return True
    return not set(wanted).isdisjoint(written) if isinstance(written, list) else True
