"""qhive's Redis broker: Django Q2's Redis queue with delivery receipts.

Selected with Django Q2's keys, ``Q_CLUSTER = {"redis": "redis://127.0.0.1:6379/0"}``
(or a dict of ``redis.Redis`` options, or ``{"django_redis": "<cache alias>"}``).
The class is :class:`qhive_broker_redis.broker.RedisBroker`; importing this
package imports neither it nor redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qhive_broker_redis.broker import RedisBroker

__all__ = ["RedisBroker"]


def __getattr__(name: str) -> Any:
    if name == "RedisBroker":
        # on first use: listing the entry points must not import redis-py
        from qhive_broker_redis.broker import RedisBroker

        return RedisBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
