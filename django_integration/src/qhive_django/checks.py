"""Django system checks for ``Q_CLUSTER`` and the plugins it selects (tag ``qhive``).

* ``qhive.E001`` a ``Q_CLUSTER`` (or ``SECRET_KEY``...) value qhive cannot use, naming the key;
* ``qhive.E002`` a selected driver is unknown or fails to import;
* ``qhive.E003`` a selected driver's Django app is missing from ``INSTALLED_APPS``;
* ``qhive.E004`` a problem reported by a plugin's ``qhive_check_config`` hook;
* ``qhive.E005`` the plugin manager could not be built (a broken plugin, strict mode);
* ``qhive.W001`` a legal setting that is probably not what was meant.

``qcluster`` runs them before it starts and refuses to on an error.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core import checks
from qhive.cli import selected_names
from qhive.config import Config
from qhive.drivers import is_dotted_path, load_driver
from qhive.errors import QhiveError

from qhive_django import conf

_PACKAGE_PREFIX = {"broker": "qhive-broker", "result_store": "qhive-store",
                   "reporter": "qhive-reporter"}
_DJANGO_SETTINGS = ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "TIME_ZONE")


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
        for kind, name in sorted(selected_names(config) - seen):
            seen.add((kind, name))
            messages.extend(_check_driver(kind, name, pm.driver_registry))
        messages.extend(_plugin_checks(pm, config))
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
    label = kind.replace("_", " ")
    try:
        driver = load_driver(kind, name, registry)
    except QhiveError as exc:
        hint = None
        if kind in _PACKAGE_PREFIX and not is_dotted_path(name):
            hint = ("install the package that provides it, e.g. "
                    f"pip install {_PACKAGE_PREFIX[kind]}-{name}")
        return [checks.Error(str(exc), hint=hint, obj="settings.Q_CLUSTER", id="qhive.E002")]
    app = getattr(driver, "django_app", None)
    if app and not apps.is_installed(app):
        return [checks.Error(
            f"the {label} {name!r} needs the Django app {app!r}, which is not in INSTALLED_APPS",
            hint=f"add {app!r} to INSTALLED_APPS and run manage.py migrate",
            obj="settings.INSTALLED_APPS", id="qhive.E003",
        )]
    return []


def _plugin_checks(pm: Any, config: Config) -> list[checks.CheckMessage]:
    try:
        found = pm.hook.qhive_check_config(config=config)
    except Exception as exc:
        return [checks.Error(f"a qhive_check_config hook failed: {type(exc).__name__}: {exc}",
                             id="qhive.E004")]
    return [checks.Error(problem, obj="settings.Q_CLUSTER", id="qhive.E004")
            for problems in found for problem in problems or ()]
