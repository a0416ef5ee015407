"""Django's settings as qhive config: read on first use, cached per cluster, and
forgotten when a setting they come from changes (``override_settings`` in tests).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from qhive.config import Config
from qhive.errors import ConfigError
from qhive.pipeline import Pipeline
from qhive.plugins import get_plugin_manager

if TYPE_CHECKING:
    from qhive.plugins import QhivePluginManager

#: Django settings a :class:`Config` is built from.
WATCHED_SETTINGS = frozenset(
    {"Q_CLUSTER", "SECRET_KEY", "SECRET_KEY_FALLBACKS", "TIME_ZONE", "USE_TZ"}
)

_configs: dict[str | None, Config] = {}
_pipelines: dict[str, Pipeline] = {}
_lock = threading.Lock()


def q_cluster_setting() -> Any:
    """``settings.Q_CLUSTER`` as written (``{}`` when absent)."""
    return getattr(settings, "Q_CLUSTER", {})


def config_arguments() -> dict[str, Any]:
    """The keyword arguments of ``Config.from_dict`` / ``Config.check`` that come from Django."""
    try:
        secret_key = settings.SECRET_KEY
    except ImproperlyConfigured:  # empty SECRET_KEY: signing says so when it needs the key
        secret_key = None
    return {
        "secret_key": secret_key,
        "secret_key_fallbacks": getattr(settings, "SECRET_KEY_FALLBACKS", ()),
        "time_zone": settings.TIME_ZONE if settings.USE_TZ else None,
    }


def get_config(cluster: str | None = None) -> Config:
    """The config of ``cluster`` (a key of ``ALT_CLUSTERS`` or the root cluster's name);
    ``None``: the cluster named by ``$Q_CLUSTER_NAME``, else the root one.

    :raises qhive.errors.ConfigError: ``Q_CLUSTER`` is wrong (the system checks list every problem).
    """
    key = cluster or os.environ.get("Q_CLUSTER_NAME") or None
    config = _configs.get(key)
    if config is None:
        config = Config.from_dict(q_cluster_setting(), cluster=key, **config_arguments())
        _configs[key] = config  # two threads racing here parse the same, equal config
    return config


def known_clusters() -> str:
    """The clusters these settings define, for messages: ``'mysite', 'long'`` (the root
    cluster, then the keys of ``ALT_CLUSTERS``), or why there are none."""
    try:
        config = get_config()
    except ConfigError as exc:
        return f"none (Q_CLUSTER is invalid: {exc})"
    return ", ".join(repr(name) for name in config.cluster_names)


def get_pipeline(cluster: str | None = None) -> Pipeline:
    """The task pipeline of ``cluster`` in this process; its queue is the cluster's name."""
    config = get_config(cluster)
    with _lock:
        pipeline = _pipelines.get(config.cluster_name)
        # ``is`` first: the config is cached, and comparing every field costs each enqueue
        if pipeline is None or (pipeline.config is not config and pipeline.config != config):
            pipeline = Pipeline(config, plugin_manager=plugin_manager(config))
            _pipelines[config.cluster_name] = pipeline
    return pipeline


def plugin_manager(config: Config | None = None) -> QhivePluginManager:
    """The process's plugin manager, built with the ``plugins`` switches of ``Q_CLUSTER``
    (qhive_django's hooks are among its default plugins: :mod:`qhive_django.apps`)."""
    if config is None:
        try:
            config = get_config()
        except ConfigError:  # only the "plugins" switches are read here; the checks report it
            config = None
    return get_plugin_manager(config)


def reset() -> None:
    """Forget every config and pipeline (closing the pipelines)."""
    with _lock:
        pipelines = list(_pipelines.values())
        _pipelines.clear()
        _configs.clear()
    for pipeline in pipelines:
        pipeline.close()


def on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver: a watched setting changed, build anew on next use."""
    if setting in WATCHED_SETTINGS:
        reset()
