"""Django system checks for ``Q_CLUSTER`` and the plugins it selects (tag ``qhive``).

* ``qhive.E001`` a ``Q_CLUSTER`` (or ``SECRET_KEY``...) value qhive cannot use, naming the key;
* ``qhive.E002`` a selected driver is unknown or fails to import (the cache store too,
  when ``cached`` is set); a ``broker_class`` that cannot be imported or built;
* ``qhive.E003`` a selected driver's Django app is missing from ``INSTALLED_APPS``;
* ``qhive.E004`` a problem reported by a plugin's ``qhive_check_config`` hook;
* ``qhive.E005`` the plugin manager could not be built (a broken plugin, strict mode);
* ``qhive.E006`` cached results go to a cache alias that ``CACHES`` does not have;
* ``qhive.W001`` a legal setting that is probably not what was meant;
* ``qhive.W002`` cached results go to a cache that processes do not share (LocMem,
  Dummy): the web process never sees what a worker saved;
* ``qhive.W003`` an error reporter is unknown or fails to import: a warning, since the
  cluster runs without it (and says so once) while the other reporters still report.

``qcluster`` runs them before it starts and refuses to on an error.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.utils.module_loading import import_string
from qhive.cli import selected_names
from qhive.config import Config
from qhive.drivers import build_driver, load_driver
from qhive.errors import DriverLoadError, QhiveError, UnknownDriverError
from qhive.pipeline import CACHE_STORE, CACHE_STORE_INSTALL

from qhive_django import conf

#: The drivers qhive's own distributions provide or will: only these get a pip hint.
_FIRST_PARTY = {
    "broker": ("qhive-broker", ("orm", "redis", "sqs", "ironmq", "mongo", "disque")),
    "result_store": ("qhive-store", ("orm", "cache", "redis")),
    "reporter": ("qhive-reporter", ("sentry", "rollbar")),
}
#: The drivers that extras of qhive-django install (its pyproject.toml), by extra name.
_EXTRAS = {("broker", name) for name in ("redis", "sqs", "ironmq", "mongo", "disque")} | {
    ("result_store", "cache"), ("reporter", "sentry"), ("reporter", "rollbar")}
_DJANGO_SETTINGS = ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "TIME_ZONE")
_BROKER_CLASS_HINT = ("Q_CLUSTER['broker_class'] must be the dotted path of an importable "
                      "qhive.contracts.Broker subclass, e.g. 'myapp.brokers.MyBroker'")


def register() -> None:
    checks.register(check_qhive, "qhive")


def check_qhive(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    problems = Config.check(conf.q_cluster_setting(), **conf.config_arguments())
    if problems:  # without a config there is nothing more to check
        return [checks.Error(str(p), obj=_setting_of(p.key), id="qhive.E001") for p in problems]
    try:
        pm = conf.plugin_manager()
    except QhiveError as exc:
        return [checks.Error(str(exc), id="qhive.E005")]
    configs = [conf.get_config()]
    configs += [conf.get_config(name) for name in configs[0].alt_cluster_names
                if name != configs[0].cluster_name]

    messages: list[checks.CheckMessage] = []
    seen: set[tuple[str, str]] = set()
    for config in configs:
        if config.broker_selected_by == "broker_class":
            seen.add(("broker", config.broker))  # built below, with this cluster's options
            messages.extend(_check_broker_class(config, pm.driver_registry))
        for kind, name in sorted(selected_names(config) - seen):
            seen.add((kind, name))
            messages.extend(_check_driver(kind, name, pm.driver_registry))
        messages.extend(_plugin_checks(pm, config))
        messages.extend(_check_cache(config, pm.driver_registry))
        messages.extend(checks.Warning(w, obj="settings.Q_CLUSTER", id="qhive.W001")
                        for w in config.warnings())
    unique: list[checks.CheckMessage] = []
    for message in messages:  # the same problem in two clusters: say it once
        if message not in unique:
            unique.append(message)
    return unique


def _setting_of(key: str | None) -> str:
    root = (key or "").split(".")[0]
    return f"settings.{root}" if root in _DJANGO_SETTINGS else "settings.Q_CLUSTER"


def _check_driver(kind: str, name: str, registry: Any) -> list[checks.CheckMessage]:
    try:
        driver = load_driver(kind, name, registry)
    except QhiveError as exc:
        hint = _install_hint(kind, name) if isinstance(exc, UnknownDriverError) else None
        if kind == "reporter":  # qhive.reporting leaves it out; the others still report
            return [checks.Warning(f"{exc}; task errors will not be sent to {name!r}", hint=hint,
                                   obj="settings.Q_CLUSTER", id="qhive.W003")]
        return [checks.Error(str(exc), hint=hint, obj="settings.Q_CLUSTER", id="qhive.E002")]
    return _check_app(kind, name, driver)


def _install_hint(kind: str, name: str) -> str | None:
    """``pip install qhive-broker-sqs`` for a name of ours; nothing for a typo of an
    installed driver (the error's "did you mean" says it) or a name of no package."""
    prefix, names = _FIRST_PARTY.get(kind, ("", ()))
    if name not in names:
        return None
    extra = f' (or pip install "qhive-django[{name}]")' if (kind, name) in _EXTRAS else ""
    return f"install the package that provides it, e.g. pip install {prefix}-{name}{extra}"


def _check_app(kind: str, name: str, driver: Any) -> list[checks.CheckMessage]:
    app = getattr(driver, "django_app", None)
    if app and not apps.is_installed(app):
        return [checks.Error(
            f"the {kind.replace('_', ' ')} {name!r} needs the Django app {app!r}, which is not "
            f"in INSTALLED_APPS",
            hint=f"add {app!r} to INSTALLED_APPS and run manage.py migrate",
            obj="settings.INSTALLED_APPS", id="qhive.E003",
        )]
    return []


def _check_broker_class(config: Config, registry: Any) -> list[checks.CheckMessage]:
    """Build the ``broker_class`` broker as ``qcluster`` will, then close it: Django Q2
    only finds a class it cannot build when the cluster starts."""
    def error(message: str, hint: str | None = None) -> list[checks.CheckMessage]:
        return [checks.Error(message, hint=hint, obj="settings.Q_CLUSTER", id="qhive.E002")]

    try:
        broker = build_driver("broker", config.broker, dict(config.broker_options),
                              registry=registry, option_key="broker_options", config=config,
                              queue=config.queue)
    except DriverLoadError as exc:
        return error(f"Q_CLUSTER['broker_class']: {exc}", _BROKER_CLASS_HINT)
    except QhiveError as exc:
        return error(str(exc))
    except Exception as exc:  # the class's own __init__ failed
        return error(f"broker {config.broker!r} of Q_CLUSTER['broker_class'] failed to build: "
                     f"{type(exc).__name__}: {exc}")
    with contextlib.suppress(Exception):  # a check must not fail on a broker's cleanup
        broker.close()
    return _check_app("broker", config.broker, broker)


def _check_cache(config: Config, registry: Any) -> list[checks.CheckMessage]:
    """Cached results need the cache store (an extra of qhive-django) and a cache every
    process shares: the workers save them, the web process reads them.
    ``async_task(cached=...)`` alone is not seen here (it raises the same error)."""
    if config.cached:
        uses, alias, setting = "Q_CLUSTER['cached']", config.cache, "Q_CLUSTER['cache']"
        try:
            load_driver("result_store", CACHE_STORE, registry)
        except QhiveError as exc:
            unknown = isinstance(exc, UnknownDriverError)
            return [checks.Error(f"{uses} keeps results in the result store {CACHE_STORE!r}: {exc}",
                                 hint=CACHE_STORE_INSTALL if unknown else None,
                                 obj="settings.Q_CLUSTER", id="qhive.E002")]
    elif config.result_store == CACHE_STORE:
        uses = f"Q_CLUSTER['result_store'] = {CACHE_STORE!r}"
        alias, setting = config.cache, "Q_CLUSTER['cache']"
        if config.result_store_options.get("cache"):
            alias = config.result_store_options["cache"]
            setting = "Q_CLUSTER['result_store_options']['cache']"
    else:
        return []
    caches = getattr(settings, "CACHES", {})
    if alias not in caches:
        known = ", ".join(map(repr, caches)) or "none"
        return [checks.Error(
            f"{setting} names the cache {alias!r}, which is not in settings.CACHES "
            f"(it has: {known}); {uses} keeps results there",
            hint=f"add {alias!r} to settings.CACHES or set {setting} to one of its aliases",
            obj="settings.Q_CLUSTER", id="qhive.E006")]
    try:
        backend = import_string(caches[alias].get("BACKEND", ""))
    except ImportError:  # Django's own cache handling reports it
        return []
    if not isinstance(backend, type):
        return []
    if issubclass(backend, DummyCache):
        why = "which keeps nothing: every cached result is lost"
    elif issubclass(backend, LocMemCache) and not config.sync:  # sync: one process
        why = ("which each process keeps to itself: the web process never sees a result a "
               "worker saved, and result(..., cached=True) returns None")
    else:
        return []
    return [checks.Warning(
        f"{uses} keeps results in the cache {alias!r} ({backend.__name__}), {why}",
        hint=f"point {setting} at a cache in settings.CACHES that every process shares "
             f"(Redis, Memcached or the database cache)",
        obj="settings.Q_CLUSTER", id="qhive.W002")]


def _plugin_checks(pm: Any, config: Config) -> list[checks.CheckMessage]:
    try:
        found = pm.hook.qhive_check_config(config=config)
    except Exception as exc:
        return [checks.Error(f"a qhive_check_config hook failed: {type(exc).__name__}: {exc}",
                             id="qhive.E004")]
    return [checks.Error(problem, obj="settings.Q_CLUSTER", id="qhive.E004")
            for problems in found for problem in problems or ()]
