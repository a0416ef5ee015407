"""qhive's Amazon SQS broker: Django Q2's ``Q_CLUSTER['sqs']`` with receipts and long polling.

Selected with Django Q2's key, ``Q_CLUSTER = {"sqs": {"aws_region": "eu-west-1"}}`` (or
``"broker": "sqs", "broker_options": {"sqs": {...}}``). The class is
:class:`qhive_broker_sqs.broker.SqsBroker`; importing this package imports neither it
nor boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qhive_broker_sqs.broker import MessageTooLarge, SqsBroker

__all__ = ["MessageTooLarge", "SqsBroker"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        # on first use: listing the entry points must not import boto3
        from qhive_broker_sqs import broker

        return getattr(broker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
