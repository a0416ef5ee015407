"""Named drivers: one broker, one result store, one serializer, one signer and
any number of reporters, chosen by name from ``Q_CLUSTER``.

A name resolves, in this order, to: a dotted path (``"myproject.brokers:MyBroker"``
or ``"myproject.brokers.MyBroker"``), a driver registered from code through the
``qhive_register_drivers`` hook, or an entry point of the kind's group, loaded
with stevedore. Only the selected entry point is imported: listing drivers
reads packaging metadata and imports nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import inspect
from collections.abc import Callable
from functools import cache
from typing import Any

from stevedore import DriverManager, NamedExtensionManager

from qhive import contracts
from qhive.errors import (
    ConfigError,
    DriverConflictError,
    DriverLoadError,
    UnknownDriverError,
    did_you_mean,
)

#: kind -> (entry-point group, the contract its drivers implement)
KINDS: dict[str, tuple[str, type]] = {
    "broker": ("qhive.brokers", contracts.Broker),
    "result_store": ("qhive.result_stores", contracts.ResultStore),
    "serializer": ("qhive.serializers", contracts.Serializer),
    "signer": ("qhive.signers", contracts.Signer),
    "reporter": ("qhive.reporters", contracts.Reporter),
}
#: hook-only plugins (see :mod:`qhive.plugins`)
PLUGIN_GROUP = "qhive.plugins"


@dataclasses.dataclass(frozen=True)
class DriverInfo:
    """What packaging metadata says about one driver; nothing is imported."""

    kind: str
    name: str
    target: str
    distribution: str | None
    version: str | None
    source: str = "entry point"  # or "code"


class DriverRegistry:
    """Drivers registered from code, by ``qhive_register_drivers`` implementations."""

    def __init__(self) -> None:
        self._drivers: dict[tuple[str, str], Callable[..., Any]] = {}

    def add(self, kind: str, name: str, factory: Callable[..., Any]) -> None:
        _check_kind(kind)
        self._drivers[kind, name] = factory

    def get(self, kind: str, name: str) -> Callable[..., Any] | None:
        return self._drivers.get((kind, name))

    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self._drivers if k == kind)

    def infos(self) -> list[DriverInfo]:
        return [
            DriverInfo(k, n, _target_of(f), None, None, source="code")
            for (k, n), f in sorted(self._drivers.items())
        ]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown driver kind {kind!r}; kinds: {', '.join(KINDS)}")


def _target_of(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def is_dotted_path(name: str) -> bool:
    return ":" in name or "." in name


# --------------------------------------------------------------------------- metadata


@cache
def _distributions(group: str) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    """(entry-point name, target) -> (distribution, version), from importlib.metadata.

    stevedore's entry-point cache keeps names and targets but not distributions.
    """
    found = {}
    for ep in importlib.metadata.entry_points(group=group):
        dist = ep.dist
        found[ep.name, ep.value] = (
            dist.metadata["Name"] if dist else None,
            dist.version if dist else None,
        )
    return found


def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    """The group's entry points as stevedore sees them, without importing any."""
    return NamedExtensionManager(group, names=[]).list_entry_points()


def describe(group: str, ep: importlib.metadata.EntryPoint, kind: str) -> DriverInfo:
    dist, version = _distributions(group).get((ep.name, ep.value), (None, None))
    return DriverInfo(kind, ep.name, ep.value, dist, version)


def list_drivers(
    kind: str | None = None, registry: DriverRegistry | None = None
) -> list[DriverInfo]:
    """Every installed driver (of one kind), from metadata only."""
    kinds = [kind] if kind else list(KINDS)
    infos = []
    for k in kinds:
        _check_kind(k)
        group = KINDS[k][0]
        infos.extend(describe(group, ep, k) for ep in entry_points(group))
    if registry is not None:
        infos.extend(i for i in registry.infos() if i.kind in kinds)
    return sorted(infos, key=lambda i: (list(KINDS).index(i.kind), i.name))


def reset_caches() -> None:
    """Forget metadata read so far (after installing a package at run time)."""
    _distributions.cache_clear()
    NamedExtensionManager.ENTRY_POINT_CACHE.clear()
    try:  # stevedore also keeps the scan per sys.path in memory
        # late, in a try: a private module of stevedore, which another version may lack
        from stevedore import _cache

        _cache._c._internal.clear()
    except (ImportError, AttributeError):
        pass


# --------------------------------------------------------------------------- loading


def load_driver(kind: str, name: str, registry: DriverRegistry | None = None) -> Callable[..., Any]:
    """Return the class (or factory) of the driver ``name`` of ``kind``.

    :raises UnknownDriverError: no such driver; the message lists installed ones.
    :raises DriverConflictError: two distributions register ``name``.
    :raises DriverLoadError: the driver's import failed.
    """
    _check_kind(kind)
    label = kind.replace("_", " ")
    if is_dotted_path(name):
        return _import_path(label, name)
    if registry is not None and (factory := registry.get(kind, name)) is not None:
        return factory

    group = KINDS[kind][0]
    matches = [ep for ep in entry_points(group) if ep.name == name]
    if not matches:
        installed = sorted({ep.name for ep in entry_points(group)} | set(
            registry.names(kind) if registry else ()
        ))
        raise UnknownDriverError(
            f"unknown {label} {name!r}; installed: {', '.join(installed) or 'none'}"
            + did_you_mean(name, installed)
        )
    if len(matches) > 1:
        owners = [describe(group, ep, kind) for ep in matches]
        raise DriverConflictError(
            f"{label} {name!r} is registered by more than one distribution: "
            + "; ".join(f"{o.distribution or '?'} {o.version or ''} ({o.target})" for o in owners)
            + ". Uninstall one of them."
        )

    def failed(_manager: Any, _ep: Any, exc: BaseException) -> None:
        # Only now: reading the distributions' metadata costs ~15 ms per group.
        info = describe(group, matches[0], kind)
        raise DriverLoadError(
            f"{label} {name!r} from {info.distribution or 'an unknown distribution'} "
            f"{info.version or ''} failed to import: {type(exc).__name__}: {exc}"
        ) from exc

    manager = DriverManager(
        group, name, on_load_failure_callback=failed, on_missing_entrypoints_callback=None
    )
    return manager.driver


def _import_path(label: str, path: str) -> Callable[..., Any]:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise DriverLoadError(
            f"{label} {path!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc
    return obj


def build_driver(
    kind: str,
    name: str,
    options: dict[str, Any] | None = None,
    *,
    registry: DriverRegistry | None = None,
    option_key: str | None = None,
    **fixed: Any,
) -> Any:
    """Load driver ``name`` and instantiate it with ``fixed`` arguments and ``options``.

    An option the driver does not accept is a :class:`ConfigError` naming
    ``option_key`` (the ``Q_CLUSTER`` key the options came from). The broker
    ``Q_CLUSTER['broker_class']`` names must subclass :class:`qhive.contracts.Broker`;
    it also gets the connection keys its ``__init__`` takes
    (:meth:`qhive.config.Config.broker_connection_options`).
    """
    factory = load_driver(kind, name, registry)
    options = dict(options or {})
    label = kind.replace("_", " ")
    key = option_key or f"{kind}_options"
    where = "".join(f"[{part!r}]" for part in key.split("."))  # Q_CLUSTER['a']['b']
    config = fixed.get("config")
    by_class = (kind == "broker" and getattr(config, "broker_selected_by", None) == "broker_class"
                and getattr(config, "broker", None) == name)
    if by_class:
        label = f"broker {name!r} of Q_CLUSTER['broker_class']"
        _check_broker_class(name, factory)
    else:
        label = f"{label} {name!r}"
    params = None
    # Without options there is nothing to check: a class inheriting a builtin's __init__
    # costs milliseconds of text-signature parsing, on a client's first enqueue too.
    if options or by_class:
        with contextlib.suppress(TypeError, ValueError):
            params = inspect.signature(factory).parameters
    if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            accepted = sorted(k for k in params if k not in fixed and k != "self")
            raise ConfigError(
                f"{label} does not take option(s) {', '.join(map(repr, unknown))} "
                f"in Q_CLUSTER{where}; it takes: {', '.join(accepted) or 'no options'}",
                key=key,
            )
    if by_class and params is not None:
        # Only what the class names: a **kwargs often ends in Broker.__init__, which takes none.
        named = {k for k, p in params.items()
                 if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        offered = config.broker_connection_options()
        options = {**{k: v for k, v in offered.items() if k in named and k not in fixed},
                   **options}
    try:
        return factory(**fixed, **options)
    except (ConfigError, UnknownDriverError, DriverLoadError):
        raise
    except TypeError as exc:
        raise ConfigError(
            f"{label} cannot be built from Q_CLUSTER{where}: {exc}", key=key
        ) from exc


def _check_broker_class(name: str, factory: Any) -> None:
    if isinstance(factory, type) and issubclass(factory, contracts.Broker):
        return
    raise ConfigError(
        f"Q_CLUSTER['broker_class'] = {name!r} is not a qhive broker: it must name a subclass "
        f"of qhive.contracts.Broker (a Django Q2 broker class needs porting: see "
        f"qhive_testkit.BrokerContract for what a broker promises)",
        key="broker_class",
    )
