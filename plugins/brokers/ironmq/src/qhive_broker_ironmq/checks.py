"""``Q_CLUSTER["iron_mq"]`` checked where settings are checked (``manage.py check``,
``qplugins check``), not first when ``qcluster`` starts.

A hook-only plugin (entry point ``qhive.plugins: ironmq``), loaded in every process
that builds qhive's plugin manager: it imports the broker, and so the ``iron-mq``
client, only when the config selects the IronMQ broker. The broker is built as
``qcluster`` builds it — options, credentials from the environment and iron.json —
without touching the network.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from qhive.errors import ConfigError
from qhive.plugins import hookimpl

if TYPE_CHECKING:
    from qhive.config import Config

#: The broker's entry-point name (``qhive.brokers``).
BROKER = "ironmq"


@hookimpl
def qhive_check_config(config: Config) -> list[str] | None:
    """The one-line error building the IronMQ broker from ``config`` gives, if any."""
    if config.broker != BROKER:
        return None
    # only a config that selects this broker needs the client
    from qhive_broker_ironmq.broker import IronMQBroker

    try:
        broker = IronMQBroker(config.queue, config=config, **config.broker_options)
    except ConfigError as exc:
        return [str(exc)]
    except TypeError as exc:  # an explicit broker_options key the broker does not take
        return [f"IronMQ broker: Q_CLUSTER['broker_options']: {exc}"]
    with contextlib.suppress(Exception):
        broker.close()
    return None
