"""``Q_CLUSTER['sqs']`` in ``manage.py check`` and ``qplugins check``.

The system checks only import a selected broker; this hook also builds it, as
``qcluster`` will — which reads the settings and finds the region, without
touching the network — so that an unknown key or a missing region is an error
(``qhive.E004``) before any process starts. Registered under ``qhive.plugins``;
boto3 is imported only when the config selects the SQS broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qhive.errors import QhiveError
from qhive.plugins import hookimpl

if TYPE_CHECKING:
    from qhive.config import Config

#: The broker name this package registers under ``qhive.brokers``.
BROKER = "sqs"


@hookimpl
def qhive_check_config(config: Config) -> list[str] | None:
    if config.broker != BROKER:
        return None
    # boto3 is imported only by projects that select the SQS broker
    from qhive_broker_sqs.broker import SqsBroker

    try:
        broker = SqsBroker(config.queue, config=config, **dict(config.broker_options))
    except QhiveError as exc:
        return [str(exc)]
    except TypeError as exc:  # an option SqsBroker does not take
        return [f"SQS broker: Q_CLUSTER['broker_options']: {exc}"]
    broker.close()
    return None
