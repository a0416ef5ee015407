"""Which broker a config selects, Django Q's keys included.

Django Q has no ``broker`` key: the connection key that is set selects the
broker (``redis``, ``sqs``, ``orm``, ...), in a fixed priority order, and
``broker_class`` names a Broker class. qhive reads those keys the same way and
adds its own: an explicit ``broker`` wins, then the legacy keys in Django Q's
order, else the ORM broker on the default database. The legacy key that
selected the broker, with its companions (``mongo_db`` beside ``mongo``, ...),
becomes the broker's options, under ``broker_options``.

The functions take a :class:`~qhive.config.Config` (as ``config``); this module
does not import it: the table imports this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from qhive.config.frozen import FrozenMap

#: Django Q's broker keys in its priority order, each with the broker it selects
#: (``broker_class``: ``None``, the value itself is the broker's dotted path).
LEGACY_BROKER_KEYS: Mapping[str, str | None] = FrozenMap({
    "broker_class": None,
    "iron_mq": "ironmq",
    "sqs": "sqs",
    "orm": "orm",
    "mongo": "mongo",
    "disque_nodes": "disque",
    "django_redis": "redis",
    "redis": "redis",
})

#: What ``Config.broker_selected_by`` may say.
SELECTORS = ("broker", *LEGACY_BROKER_KEYS, "default")

# Keys handed to the broker with the legacy key that selected it, when set.
_COMPANIONS = {
    "mongo": ("mongo_db",),
    "disque_nodes": ("disque_auth", "disque_fastack"),
    "django_redis": ("redis",),
    "redis": ("django_redis",),
}


def legacy_options(key: str, config: Any) -> dict[str, Any]:
    """The legacy ``key`` and its companions that differ from their defaults."""
    defaults = {field.name: field.default for field in dataclasses.fields(config)}
    options = {key: getattr(config, key)}
    for companion in _COMPANIONS.get(key, ()):
        value = getattr(config, companion)
        if value != defaults[companion]:
            options[companion] = value
    return options


def connection_options(config: Any) -> FrozenMap:
    """Every legacy connection key ``config`` sets, with its companions (see
    :meth:`qhive.config.Config.broker_connection_options`)."""
    options: dict[str, Any] = {}
    for key, broker in LEGACY_BROKER_KEYS.items():
        if broker is not None and getattr(config, key) is not None:
            options.update(legacy_options(key, config))
    return FrozenMap(options)


def resolve_broker(config: Any) -> tuple[str, FrozenMap, str]:
    """(broker, options, selected_by): an explicit ``broker`` wins, then Django Q's keys
    in its priority order, else the ORM broker on the default database."""
    present = [k for k in LEGACY_BROKER_KEYS if getattr(config, k) is not None]
    explicit = config.broker_options
    if config.broker is not None:
        # broker="redis" next to redis={...}: the legacy key still supplies the options.
        owned = [k for k in present if LEGACY_BROKER_KEYS[k] == config.broker]
        legacy = legacy_options(owned[0], config) if owned else {}
        return config.broker, FrozenMap({**legacy, **explicit}), "broker"
    if present:
        key = present[0]
        if LEGACY_BROKER_KEYS[key] is None:
            # broker_class names the broker; its connection keys are offered to it when it
            # is built (Config.broker_connection_options), not forced on it as options.
            return getattr(config, key), FrozenMap(explicit), key
        return LEGACY_BROKER_KEYS[key], FrozenMap({**legacy_options(key, config), **explicit}), key
    return "orm", FrozenMap(explicit), "default"
