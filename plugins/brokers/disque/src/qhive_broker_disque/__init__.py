"""qhive's Disque broker: Django Q's ``Q_CLUSTER["disque_nodes"]``, with receipts.

Selected with Django Q's keys, ``Q_CLUSTER = {"disque_nodes": ["127.0.0.1:7711"]}``
(with ``disque_auth`` and ``disque_fastack`` beside it). The class is
:class:`qhive_broker_disque.broker.DisqueBroker`; importing this package imports
neither it nor redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qhive_broker_disque.broker import DisqueBroker

__all__ = ["DisqueBroker"]


def __getattr__(name: str) -> Any:
    if name == "DisqueBroker":
        # on first use: listing the entry points must not import redis-py
        from qhive_broker_disque.broker import DisqueBroker

        return DisqueBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
