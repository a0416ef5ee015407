"""qhive's IronMQ broker: Django Q2's ``iron_mq`` queue, with reservations as receipts.

Selected with Django Q2's key, ``Q_CLUSTER = {"iron_mq": {"token": "…",
"project_id": "…"}}`` (the keyword arguments of ``iron_mq.IronMQ``). The class is
:class:`qhive_broker_ironmq.broker.IronMQBroker`; importing this package imports
neither it nor the ``iron-mq`` client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qhive_broker_ironmq.broker import IronMQBroker

__all__ = ["IronMQBroker"]


def __getattr__(name: str) -> Any:
    if name == "IronMQBroker":
        # on first use: listing the entry points must not import the iron-mq client
        from qhive_broker_ironmq.broker import IronMQBroker

        return IronMQBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
