"""qhive's MongoDB broker: Django Q2's mongo queue, with leases as delivery receipts.

Selected with Django Q2's keys, ``Q_CLUSTER = {"mongo": {"host": "mongodb://db:27017/queues"}}``
(any ``pymongo.MongoClient`` keyword arguments; ``mongo_db`` names the database).
The class is :class:`qhive_broker_mongo.broker.MongoBroker`; importing this package
imports neither it nor pymongo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qhive_broker_mongo.broker import MongoBroker

__all__ = ["MongoBroker"]


def __getattr__(name: str) -> Any:
    if name == "MongoBroker":
        # on first use: listing the entry points must not import pymongo
        from qhive_broker_mongo.broker import MongoBroker

        return MongoBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
