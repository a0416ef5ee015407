"""The pluggy plugin manager: built lazily, once per process.

Hook-only plugins are entry points of the ``qhive.plugins`` group. Each is
loaded on its own: one that fails to import or implements a hook that does
not exist is logged once, skipped and reported as ``failed`` — unless strict
mode is on, when it is an error.

Switches, from config (``Q_CLUSTER["plugins"]``) or the environment, which wins:

* ``disabled`` / ``QHIVE_DISABLED_PLUGINS`` (comma separated): entry-point or
  distribution names not to load;
* ``strict`` / ``QHIVE_STRICT_PLUGINS=1``: any plugin problem raises;
* ``trace`` / ``QHIVE_TRACE_PLUGINS=1``: log every hook call and its result on
  the ``qhive.trace`` logger.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import pluggy

from qhive import hookspecs
from qhive.builtin import hooks as builtin_hooks
from qhive.drivers import PLUGIN_GROUP, DriverRegistry, describe, entry_points
from qhive.errors import ConfigError, PluginError
from qhive.hookspecs import hookimpl as hookimpl  # re-exported: plugins import it from here

if TYPE_CHECKING:
    from qhive.config import Config
    from qhive.pipeline import Pipeline

logger = logging.getLogger("qhive.plugins")

#: Hook modules every plugin manager of this process registers, by name: the core's
#: own, and those a framework adds as it starts (:func:`add_default_plugin`) — a
#: Django app's hooks are not entry points, since only processes that run Django
#: have them. Kept across :func:`reset_plugin_manager`.
DEFAULT_PLUGINS: dict[str, str] = {"qhive.core": builtin_hooks.__name__}


@dataclasses.dataclass
class PluginStatus:
    """How loading one hook-only plugin went, for ``qplugins list``."""

    name: str
    target: str
    status: str  # "ok", "failed" or "disabled"
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class PluginSettings:
    disabled: frozenset[str] = frozenset()
    strict: bool = False
    trace: bool = False

    @classmethod
    def resolve(cls, config: Config | None) -> PluginSettings:
        base = config.plugins if config is not None else {}
        disabled = set(base.get("disabled", ()))
        strict = bool(base.get("strict", False))
        trace = bool(base.get("trace", False))
        env = os.environ
        if env.get("QHIVE_DISABLED_PLUGINS") is not None:
            disabled = {n.strip() for n in env["QHIVE_DISABLED_PLUGINS"].split(",") if n.strip()}
        if env.get("QHIVE_STRICT_PLUGINS") is not None:
            strict = _truthy(env["QHIVE_STRICT_PLUGINS"])
        if env.get("QHIVE_TRACE_PLUGINS") is not None:
            trace = _truthy(env["QHIVE_TRACE_PLUGINS"])
        return cls(frozenset(disabled), strict, trace)


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no", "off")


class QhivePluginManager(pluggy.PluginManager):
    """A pluggy manager that also knows how its plugins loaded and holds the
    drivers registered from code."""

    def __init__(self, settings: PluginSettings) -> None:
        super().__init__("qhive")
        self.settings = settings
        self.statuses: list[PluginStatus] = []
        self.add_hookspecs(hookspecs)
        self._registry: DriverRegistry | None = None

    @property
    def driver_registry(self) -> DriverRegistry:
        """Drivers registered by ``qhive_register_drivers``, asked once."""
        if self._registry is None:
            registry = DriverRegistry()
            self.hook.qhive_register_drivers(registry=registry)
            self._registry = registry
        return self._registry

    def register_checked(self, plugin: Any, name: str | None = None) -> str | None:
        """Register ``plugin`` and reject implementations of hooks that do not exist."""
        name = self.register(plugin, name)
        unknown = [hc.name for hc in self.get_hookcallers(plugin) or () if not hc.has_spec()]
        if unknown:
            self.unregister(plugin)
            raise pluggy.PluginValidationError(
                plugin, f"implements unknown hook(s) {', '.join(unknown)}; see qhive.hookspecs"
            )
        self._registry = None  # a new plugin may register drivers
        return name

    def load_entrypoint_plugins(self) -> None:
        disabled = self.settings.disabled
        for ep in entry_points(PLUGIN_GROUP):
            status = PluginStatus(ep.name, ep.value, "ok")
            self.statuses.append(status)
            # A distribution's name costs a scan of every installed package's metadata
            # (~15 ms): read only when something is disabled or fails.
            if ep.name in disabled or (
                disabled and describe(PLUGIN_GROUP, ep, "plugin").distribution in disabled
            ):
                status.status = "disabled"
                continue
            try:
                self.register_checked(ep.load(), name=f"plugin:{ep.name}")
            except Exception as exc:
                status.status = "failed"
                status.error = f"{type(exc).__name__}: {exc}"
                info = describe(PLUGIN_GROUP, ep, "plugin")
                message = (
                    f"qhive plugin {ep.name!r} from {info.distribution or '?'} "
                    f"{info.version or ''} failed to load: {status.error}"
                )
                if self.settings.strict:
                    raise PluginError(message) from exc
                logger.error(
                    "%s; skipped (disable it with QHIVE_DISABLED_PLUGINS=%s)", message, ep.name
                )

    def enable_trace_logging(self) -> None:
        trace_log = logging.getLogger("qhive.trace")
        self.trace.root.setwriter(lambda message: trace_log.info(message.rstrip()))
        self.enable_tracing()


_manager: QhivePluginManager | None = None
_lock = threading.Lock()


def get_plugin_manager(config: Config | None = None) -> QhivePluginManager:
    """The process's plugin manager, built on first use.

    ``config`` supplies the ``plugins`` switches the first time; later calls
    return the same manager whatever they pass.
    """
    global _manager
    if _manager is None:
        with _lock:
            if _manager is None:
                _manager = _build(PluginSettings.resolve(config))
    return _manager


def add_default_plugin(module: str) -> None:
    """Register the hook module ``module`` (a dotted path) with the plugin manager, now
    if it is built and whenever it is built again. A framework's app calls this as it
    starts (qhive_django from ``AppConfig.ready()``)."""
    with _lock:
        DEFAULT_PLUGINS[module] = module
        pm = _manager
    if pm is not None:
        plugin = importlib.import_module(module)
        if not pm.is_registered(plugin):
            pm.register_checked(plugin, name=module)


def project_pipeline(cluster: str | None = None) -> Pipeline:
    """The pipeline of ``cluster`` (``None``: the process's own) in the framework this
    process runs, asked through ``qhive_pipeline``: how a plugin's admin page or
    command reaches the project's broker and result store without importing the
    framework.

    :raises ConfigError: no framework answered (qhive_django not set up).
    """
    pipeline = get_plugin_manager().hook.qhive_pipeline(cluster=cluster)
    if pipeline is None:
        raise ConfigError("no framework knows this project's pipeline: under Django, add "
                          "'qhive_django' to INSTALLED_APPS and call django.setup() first")
    return pipeline


def _build(settings: PluginSettings) -> QhivePluginManager:
    pm = QhivePluginManager(settings)
    for name, module in list(DEFAULT_PLUGINS.items()):
        pm.register_checked(importlib.import_module(module), name=name)
    if settings.trace:
        pm.enable_trace_logging()
    pm.load_entrypoint_plugins()
    return pm


def reset_plugin_manager() -> None:
    """Forget the manager (tests; a forked child that must reload plugins)."""
    global _manager
    with _lock:
        _manager = None
