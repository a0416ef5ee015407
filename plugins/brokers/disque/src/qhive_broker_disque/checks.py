"""Django Q's Disque settings in ``manage.py check`` and ``qplugins check``.

The system checks only import a selected broker; this hook also builds it, as
``qcluster`` will — which checks ``disque_nodes``, ``disque_auth``, ``disque_fastack``
and the broker options without touching the network — so that a malformed node is one
error (``qhive.E004``) before any process starts. Registered under ``qhive.plugins``;
redis-py is imported only when the config selects the Disque broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qhive.errors import QhiveError
from qhive.plugins import hookimpl

if TYPE_CHECKING:
    from qhive.config import Config

#: The broker name this package registers under ``qhive.brokers``.
BROKER = "disque"


@hookimpl
def qhive_check_config(config: Config) -> list[str] | None:
    if config.broker != BROKER:
        return None
    # redis-py is imported only by projects that select the Disque broker
    from qhive_broker_disque.broker import DisqueBroker

    try:
        broker = DisqueBroker(config.queue, config=config, **dict(config.broker_options))
    except QhiveError as exc:
        return [str(exc)]
    except TypeError as exc:  # an option DisqueBroker does not take
        return [f"Disque broker: Q_CLUSTER['broker_options']: {exc}"]
    broker.close()
    return None
