"""``Q_CLUSTER["mongo"]`` and ``["mongo_db"]`` checked where settings are checked
(``manage.py check``, ``qplugins check``), not first when ``qcluster`` starts.

A hook-only plugin (entry point ``qhive.plugins: mongo``), loaded in every process that
builds qhive's plugin manager: it imports the broker, and so pymongo, only when the
config selects the MongoDB broker. The broker is built as ``qcluster`` builds it — which
checks option names and values and the URI — without touching the network.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from qhive.errors import ConfigError
from qhive.plugins import hookimpl

if TYPE_CHECKING:
    from qhive.config import Config

#: The broker's entry-point name (``qhive.brokers``).
BROKER = "mongo"


@hookimpl
def qhive_check_config(config: Config) -> list[str] | None:
    """The one-line error building the MongoDB broker from ``config`` gives, if any."""
    if config.broker != BROKER:
        return None
    # only a config that selects this broker needs pymongo
    from qhive_broker_mongo.broker import MongoBroker

    try:
        broker = MongoBroker(config.queue, config=config, **config.broker_options)
    except ConfigError as exc:
        return [str(exc)]
    except TypeError as exc:  # an explicit broker_options key the broker does not take
        return [f"MongoDB broker: Q_CLUSTER['broker_options']: {exc}"]
    with contextlib.suppress(Exception):
        broker.close()
    return None
