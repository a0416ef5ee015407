"""``Q_CLUSTER`` parsed once into a typed, immutable :class:`Config`.

Every Django Q / Django Q2 key is accepted with its documented default and
meaning, plus qhive's own keys (``broker``, ``result_store``, ``serializer``,
``signer``, ``plugins``, ...). The fields of :class:`Config` are the table that
drives everything: each carries its ``Q_CLUSTER`` key, default, check and a
one-line description in its metadata (see :data:`SETTINGS`). Anything wrong is
a :class:`qhive.errors.ConfigError` naming the key, what was expected and what
was given, so a bad setting fails at startup and never inside a worker.

Nothing here imports Django or a broker client: the Django integration passes
``SECRET_KEY``, ``SECRET_KEY_FALLBACKS`` and ``TIME_ZONE`` in as arguments.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import enum
import logging
import math
import os
import re
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from qhive.errors import ConfigError

__all__ = ["LEGACY_BROKER_KEYS", "SETTINGS", "Config", "FrozenMap", "Setting"]

MASK = "********"
_META = "qhive"


# --------------------------------------------------------------------------- read-only mapping


class FrozenMap(Mapping[str, Any]):
    """A read-only, picklable mapping; compares equal to a dict with the same items.

    Used for every mapping-valued setting (``MappingProxyType`` cannot be pickled,
    and a :class:`Config` travels to worker processes).
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        object.__setattr__(self, "_data", dict(data))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        # Options of brokers and stores end up in logs (plugin tracing): never show a secret.
        shown = {k: _masked(k, v) for k, v in self._data.items()}
        return f"FrozenMap({shown!r})"

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._data,))

    def __or__(self, other: Any) -> FrozenMap:
        if not isinstance(other, Mapping):
            return NotImplemented
        return FrozenMap({**self._data, **other})

    def to_dict(self) -> dict[str, Any]:
        """A deep, plain copy: nested maps become dicts, tuples become lists."""
        return _thaw(self)


def _freeze(value: Any) -> Any:
    """Deep-copy ``value`` into immutable containers (dict -> FrozenMap, list -> tuple)."""
    if isinstance(value, Mapping):
        return FrozenMap({k: _freeze(v) for k, v in value.items()})
    if type(value) in (list, tuple):
        return tuple(_freeze(v) for v in value)
    if type(value) in (set, frozenset):
        return frozenset(_freeze(v) for v in value)
    if value is None or isinstance(value, (str, bytes, int, float, complex, type)):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:  # e.g. an SSL context in broker options: share it rather than fail
        return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_thaw(v) for v in value]
    return value


# --------------------------------------------------------------------------- secrets

_SECRET_WORDS = ("password", "passwd", "secret", "token", "key", "dsn", "access", "auth",
                 "credential")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)(?P<pw>[^/?#\s]+)@")
_URL_QUERY_ITEM = re.compile(r"(?P<head>[?&;](?P<name>[^=&;#\s]+)=)(?P<value>[^&;#\s]+)")


def _looks_secret(name: Any) -> bool:
    return isinstance(name, str) and any(w in name.lower() for w in _SECRET_WORDS)


def _mask_url(text: str) -> str:
    """Mask the password of ``scheme://user:password@host`` and secret-looking query values."""
    if "://" not in text:
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _URL_QUERY_ITEM.sub(
        lambda m: f"{m['head']}{MASK}" if _looks_secret(m["name"]) else m[0], text
    )


def _masked(name: Any, value: Any) -> Any:
    """``value`` for a repr: secret-looking entries and URL passwords masked, the
    container types kept (a nested FrozenMap masks itself)."""
    if value is None:
        return None
    if _looks_secret(name):
        return MASK
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, Mapping):
        return {k: _masked(k, v) for k, v in value.items()}
    if type(value) in (tuple, list, set, frozenset):
        return type(value)(_masked(None, v) for v in value)
    if isinstance(value, str):
        return _mask_url(value)
    return value


def _redact(name: Any, value: Any, secrets: frozenset = frozenset()) -> Any:
    """A plain copy of ``value`` with secret-looking entries and URL passwords masked."""
    if value is None:
        return None
    if _looks_secret(name):
        return MASK
    if isinstance(value, Mapping):
        return {k: _redact(k, v, secrets) for k, v in value.items()}
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_redact(None, v, secrets) for v in value]
    if isinstance(value, (str, bytes)) and value in secrets:
        return MASK
    if isinstance(value, str):
        return _mask_url(value)
    return value


# --------------------------------------------------------------------------- checks


@dataclasses.dataclass(frozen=True)
class _Path:
    """Where a value sits: ``Q_CLUSTER['timeout']``, ``ALT_CLUSTERS['long']['timeout']``."""

    parts: tuple[Any, ...] = ()
    root: str = "Q_CLUSTER"

    def __truediv__(self, part: Any) -> _Path:
        return _Path((*self.parts, part), self.root)

    def __str__(self) -> str:
        root, parts = self.root, self.parts
        if root == "Q_CLUSTER" and parts[:1] == ("ALT_CLUSTERS",):
            root, parts = "ALT_CLUSTERS", parts[1:]  # how the docs name it
        return root + "".join(f"[{p!r}]" for p in parts)

    @property
    def key(self) -> str:
        """The dotted form kept in :attr:`ConfigError.key`."""
        return ".".join(str(p) for p in self.parts) or self.root


def _show(value: Any, path: _Path) -> str:
    """``'four' (str)``, with secrets masked: error messages end up in logs."""
    last = path.parts[-1] if path.parts else path.root
    shown = MASK if _looks_secret(last) and value is not None else repr(_redact(None, value))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{shown} ({type(value).__name__})"


class _Invalid(Exception):
    """Raised by a converter; :class:`_Check` turns it into a ConfigError."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class _Check:
    """Validates and normalizes one value. ``expected`` completes "must be ..."."""

    expected: str
    convert: Callable[[Any, _Path], Any]

    def __call__(self, value: Any, path: _Path) -> Any:
        try:
            return self.convert(value, path)
        except _Invalid as exc:
            reason = f": {exc.reason}" if exc.reason else ""
            raise ConfigError(
                f"{path} must be {self.expected}, got {_show(value, path)}{reason}", key=path.key
            ) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _or_none(expected: str, none: bool) -> str:
    return f"{expected} or None" if none else expected


def _int(minimum: int, *, none: bool = False) -> _Check:
    def convert(value: Any, path: _Path) -> Any:
        if (value is None and none) or (_is_int(value) and value >= minimum):
            return value
        raise _Invalid

    return _Check(_or_none(f"an int >= {minimum}", none), convert)


def _number(*, above: float = 0, below: float | None = None, none: bool = False) -> _Check:
    def convert(value: Any, path: _Path) -> Any:
        if value is None and none:
            return None
        if _is_number(value) and value > above and (below is None or value < below):
            return value
        raise _Invalid

    expected = f"a number > {above}" + (f" and < {below}" if below is not None else "")
    return _Check(_or_none(expected, none), convert)


def _bool() -> _Check:
    def convert(value: Any, path: _Path) -> Any:
        if isinstance(value, bool):
            return value
        raise _Invalid

    return _Check("True or False", convert)


def _text(*, none: bool = False, pattern: str | None = None, what: str = "a non-empty string"
          ) -> _Check:
    regex = re.compile(pattern) if pattern else None

    def convert(value: Any, path: _Path) -> Any:
        if value is None and none:
            return None
        if isinstance(value, str) and value and (regex is None or regex.fullmatch(value)):
            return value
        raise _Invalid

    return _Check(_or_none(what, none), convert)


def _choice(*choices: str, none: bool = False) -> _Check:
    def convert(value: Any, path: _Path) -> Any:
        if (value is None and none) or (isinstance(value, str) and value in choices):
            return value
        raise _Invalid

    listed = ", ".join(repr(c) for c in choices)
    return _Check(f"one of {listed} or None" if none else f"one of {listed}", convert)


def _mapping(*, none: bool = False, what: str = "a mapping") -> _Check:
    def convert(value: Any, path: _Path) -> Any:
        if value is None and none:
            return None
        if not isinstance(value, Mapping):
            raise _Invalid
        if not all(isinstance(k, str) for k in value):
            raise _Invalid("keys must be strings")
        return _freeze(value)

    return _Check(_or_none(what, none), convert)


def _strings(*, none: bool = False) -> _Check:
    def convert(value: Any, path: _Path) -> Any:
        if value is None and none:
            return None
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
            return tuple(value)
        raise _Invalid

    return _Check(_or_none("a list of strings", none), convert)


def _either(*checks: _Check, expected: str) -> _Check:
    def convert(value: Any, path: _Path) -> Any:
        for check in checks:
            with contextlib.suppress(ConfigError):
                return check(value, path)
        raise _Invalid

    return _Check(expected, convert)


def _cached_value(value: Any, path: _Path) -> Any:
    if isinstance(value, bool) or (_is_int(value) and value > 0):
        return value
    raise _Invalid


def _queue_limit(value: Any, path: _Path) -> Any:
    if value is None or (_is_int(value) and value == 0):  # Django Q2: falsy means unbounded
        return None
    if _is_int(value) and value >= 1:
        return value
    raise _Invalid


def _log_level(value: Any, path: _Path) -> Any:
    levels = logging.getLevelNamesMapping()
    if isinstance(value, str) and value.upper() in levels:
        return value.upper()
    if _is_int(value) and value in levels.values():  # logging.DEBUG and friends
        return logging.getLevelName(value)
    raise _Invalid


def _time_zone(value: Any, path: _Path) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _Invalid
    try:
        zoneinfo.ZoneInfo(value)
    except ValueError as exc:  # malformed key such as "../etc"
        raise _Invalid(str(exc)) from None
    except zoneinfo.ZoneInfoNotFoundError:
        # Without any tz database (Windows without tzdata) nothing can be checked.
        if zoneinfo.available_timezones():
            raise _Invalid("no such time zone") from None
    return value


def _error_reporters(value: Any, path: _Path) -> Any:
    value = _mapping()(value, path)
    options = _mapping(what="a mapping of the reporter's options")
    return FrozenMap({name: options(opts, path / name) for name, opts in value.items()})


_PLUGIN_KEYS: dict[str, tuple[_Check, Any]] = {
    "disabled": (_strings(), ()),
    "strict": (_bool(), False),
    "trace": (_bool(), False),
}


def _plugins(value: Any, path: _Path) -> Any:
    value = _mapping()(value, path)
    out = {key: default for key, (_, default) in _PLUGIN_KEYS.items()}
    for key, item in value.items():
        if key not in _PLUGIN_KEYS:
            raise _unknown_key(key, _PLUGIN_KEYS, path)
        out[key] = _PLUGIN_KEYS[key][0](item, path / key)
    return FrozenMap(out)


def _alt_clusters(value: Any, path: _Path) -> Any:
    value = _mapping()(value, path)
    return FrozenMap({
        name: FrozenMap(_read_level(entry, path / name, alt=True))
        for name, entry in value.items()
    })


_NAME = r"[A-Za-z_][\w\-]*"
_DOTTED = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+|[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.\w+)*"
_DRIVER_WHAT = "a driver name or a dotted path such as 'pkg.mod:Class'"


def _driver(*, none: bool = False) -> _Check:
    return _text(none=none, pattern=f"{_NAME}|{_DOTTED}", what=_DRIVER_WHAT)


# --------------------------------------------------------------------------- the table


class _Auto(enum.Enum):
    """Default of a setting derived from others (``workers``, ``queue_limit``)."""

    AUTO = "AUTO"

    def __repr__(self) -> str:
        return "AUTO"


_AUTO = _Auto.AUTO


@dataclasses.dataclass(frozen=True)
class Setting:
    """One ``Q_CLUSTER`` key: its attribute, default, what it accepts and what it does."""

    key: str
    attr: str
    default: Any
    expected: str
    doc: str
    check: Callable[[Any, _Path], Any] = dataclasses.field(repr=False, compare=False)


def _key(default: Any, check: _Check | Callable[[Any, _Path], Any], doc: str, *,
         expected: str | None = None, key: str | None = None) -> Any:
    """A :class:`Config` field that is a ``Q_CLUSTER`` key."""
    if not isinstance(check, _Check):
        check = _Check(expected or "", check)
    return dataclasses.field(default=default, metadata={_META: (key, check, doc)})


@dataclasses.dataclass(frozen=True)
class Config:
    """The settings of one cluster, parsed from ``Q_CLUSTER`` by :meth:`from_dict`.

    ``Config()`` is the all-defaults config. Constructing one directly validates
    every field too (``Config(workers=2)`` works in tests). Values derived from
    others (``cluster_name``, ``workers``, ``queue_limit``, ``broker``,
    ``broker_options``, ``broker_selected_by``) are computed once, at
    construction: ``dataclasses.replace()`` keeps them as they were.
    """

    # -- identity
    name: str = _key("default", _text(),
                     "Project name: signing salt, stats prefix, queue of the root cluster.")
    cluster_name: str = _key(None, _text(none=True),
                             "The queue this cluster consumes; None: the same as name.")
    label: str = _key("Django Q", _text(), "Label of the admin pages.")

    # -- the cluster's processes
    workers: int = _key(_AUTO, _int(1), "Worker processes; default: the CPU count (4 if unknown).")
    daemonize_workers: bool = _key(True, _bool(),
                                   "Start workers as daemons (False lets tasks fork).")
    recycle: int = _key(500, _int(0), "Tasks a worker runs before it is replaced; 0: never.")
    max_rss: int | None = _key(None, _int(1, none=True),
                               "Resident memory (KB) after which a worker is replaced.")
    timeout: float | None = _key(None, _number(none=True),
                                 "Seconds a task may run before it is killed; None: no limit.")
    guard_cycle: float = _key(0.5, _number(below=60), "Seconds between two guard loop rounds.")
    queue_limit: int | None = _key(
        _AUTO, _queue_limit, "Tasks held in memory by one cluster; default workers**2; "
                             "None (or 0, as in Django Q2): unbounded.",
        expected="an int >= 1 or None (unbounded)")
    cpu_affinity: int = _key(0, _int(0), "Cores per worker (needs psutil); 0: no affinity.")
    scheduler: bool = _key(True, _bool(), "Run schedules in this cluster.")
    scheduler_interval: float = _key(
        30, _number(), "Seconds between two looks for new or changed schedules; the scheduler "
                       "also wakes when the next schedule is due.")
    catch_up: bool = _key(True, _bool(), "Replay the schedule slots missed while down.")
    time_zone: str | None = _key(
        None, _time_zone, "Time zone of the scheduler; from_dict falls back to TIME_ZONE.",
        expected="a time zone name such as 'Europe/Paris' or None")

    # -- tasks and delivery
    retry: float = _key(60, _number(), "Seconds before a broker with receipts delivers "
                                       "an unacknowledged task again.")
    max_attempts: int = _key(0, _int(0), "Deliveries of a failing task before it is dropped; "
                                         "0: unlimited.")
    ack_failures: bool = _key(False, _bool(), "Acknowledge failed tasks too.")
    bulk: int = _key(1, _int(1), "Messages asked from the broker per dequeue.")
    poll: float = _key(0.2, _number(), "Seconds between two looks at a broker that cannot block.")
    compress: bool = _key(False, _bool(), "zlib-compress task packages.")
    sync: bool = _key(False, _bool(), "Run every task synchronously in the caller (testing).")
    testing: bool = _key(False, _bool(), "Test mode: shows the queued-task admin, fakes affinity.")

    # -- results, cache, logging
    save_limit: int = _key(250, _int(-1),
                           "Successes kept: 0 unlimited, -1 none; failures are always kept.")
    save_limit_per: str | None = _key(None, _choice("group", "name", "func", none=True),
                                      "Apply save_limit per group, name or func.")
    cache: str = _key("default", _text(), "Django cache alias for stats and cached results.")
    cached: bool | int = _key(False, _cached_value, "Keep results in the cache (True or seconds).",
                              expected="True, False or an int number of seconds > 0")
    log_level: str = _key("INFO", _log_level, "Level of the 'django-q' logger.",
                          expected="a logging level name such as 'INFO'")
    error_reporter: Mapping[str, Mapping[str, Any]] = _key(
        FrozenMap(), _error_reporters, "Reporter name -> its options.",
        expected="a mapping of reporter name -> options")
    rollbar: Mapping[str, Any] | None = _key(
        None, _mapping(none=True),
        "Django Q 0.x Rollbar options; the same as error_reporter={'rollbar': ...}.")

    # -- qhive's backends
    broker: str = _key(None, _driver(none=True),
                       "Broker driver name or dotted path; None: chosen from the legacy keys.")
    broker_options: Mapping[str, Any] = _key(FrozenMap(), _mapping(),
                                             "Keyword options of the broker driver.")
    broker_selected_by: str = dataclasses.field(default=None)  # type: ignore[assignment]
    result_store: str = _key("orm", _driver(), "Result store driver name or dotted path.")
    result_store_options: Mapping[str, Any] = _key(FrozenMap(), _mapping(),
                                                   "Keyword options of the result store.")
    serializer: str = _key("pickle", _driver(), "Serializer driver name or dotted path.")
    signer: str = _key("hmac", _driver(), "Signer driver name or dotted path.")
    plugins: Mapping[str, Any] = _key(
        FrozenMap({"disabled": (), "strict": False, "trace": False}), _plugins,
        "Plugin loading: disabled (names), strict (fail on a broken plugin), trace (log hooks).",
        expected="a mapping with keys disabled, strict, trace")

    # -- Django Q's broker keys (see LEGACY_BROKER_KEYS)
    broker_class: str | None = _key(None, _text(none=True, pattern=_DOTTED,
                                                what="a dotted path such as 'pkg.mod.Broker'"),
                                    "Dotted path of a Broker class.")
    iron_mq: Mapping[str, Any] | None = _key(None, _mapping(none=True), "IronMQ client options.")
    sqs: Mapping[str, Any] | None = _key(None, _mapping(none=True), "Amazon SQS options.")
    orm: str | None = _key(None, _text(none=True), "Database alias of the ORM broker.")
    mongo: Mapping[str, Any] | None = _key(None, _mapping(none=True),
                                           "pymongo MongoClient options.")
    mongo_db: str | None = _key(None, _text(none=True), "MongoDB database of the queues.")
    disque_nodes: tuple[str, ...] | None = _key(None, _strings(none=True),
                                                "Disque nodes, 'host:port' each.")
    disque_auth: str | None = _key(None, _text(none=True), "Disque password.")
    disque_fastack: bool = _key(False, _bool(), "Disque fast acknowledgements.")
    django_redis: str | None = _key(None, _text(none=True), "django-redis cache alias.")
    redis: Mapping[str, Any] | str | None = _key(
        None, _either(_mapping(none=True), _text(), expected="a mapping, a URL string or None"),
        "Redis connection options or URL.")

    alt_clusters: Mapping[str, Mapping[str, Any]] = _key(
        FrozenMap(), _alt_clusters, "Cluster name -> settings overriding the root ones.",
        expected="a mapping of cluster name -> settings", key="ALT_CLUSTERS")

    # -- from Django's settings, never from Q_CLUSTER; never shown
    secret_key: str | bytes | None = dataclasses.field(default=None, repr=False)
    secret_key_fallbacks: tuple[str | bytes, ...] = dataclasses.field(default=(), repr=False)

    def __post_init__(self) -> None:
        for setting in SETTINGS.values():
            value = getattr(self, setting.attr)
            if value is not _AUTO:
                self._set(setting.attr, setting.check(value, _Path((setting.key,))))
        self._set("secret_key", _secret_key(self.secret_key))
        self._set("secret_key_fallbacks", _secret_key_fallbacks(self.secret_key_fallbacks))
        # Derived values, computed once so that a pickled copy sees the same ones.
        if self.cluster_name is None:
            self._set("cluster_name", self.name)
        if self.workers is _AUTO:
            self._set("workers", os.cpu_count() or 4)
        if self.queue_limit is _AUTO:
            self._set("queue_limit", self.workers**2)
        if self.rollbar is not None and "rollbar" not in self.error_reporter:
            self._set("error_reporter", FrozenMap({"rollbar": self.rollbar}) | self.error_reporter)
        if self.broker_selected_by not in (None, *_SELECTORS):
            raise ConfigError(f"broker_selected_by must be one of {', '.join(_SELECTORS)}, "
                              f"got {self.broker_selected_by!r}", key="broker_selected_by")
        if self.broker is None or self.broker_selected_by is None:
            broker, options, selected_by = _resolve_broker(self)
            self._set("broker", broker)
            self._set("broker_options", options)
            self._set("broker_selected_by", selected_by)

    def _set(self, attr: str, value: Any) -> None:
        object.__setattr__(self, attr, value)

    # -- building

    @classmethod
    def from_dict(
        cls,
        q_cluster: Mapping[str, Any] | None = None,
        *,
        cluster: str | None = None,
        secret_key: str | bytes | None = None,
        secret_key_fallbacks: Iterable[str | bytes] = (),
        time_zone: str | None = None,
    ) -> Config:
        """Parse a ``Q_CLUSTER`` dict into the config of one cluster.

        :param cluster: the cluster to configure: the root one (``None``, its
            ``name`` or ``cluster_name``) or a key of ``ALT_CLUSTERS``. ``None``
            reads the ``Q_CLUSTER_NAME`` environment variable.
        :param secret_key: ``SECRET_KEY``; ``secret_key_fallbacks`` the older ones.
        :param time_zone: used when ``q_cluster`` has no ``time_zone`` key.
        :raises ConfigError: on the first problem; :meth:`check` lists them all.
        """
        errors: list[ConfigError] = []
        config = cls._parse(q_cluster, cluster, secret_key, secret_key_fallbacks, time_zone,
                            errors)
        if errors:
            raise errors[0]
        assert config is not None
        return config

    @classmethod
    def check(
        cls,
        q_cluster: Mapping[str, Any] | None = None,
        *,
        cluster: str | None = None,
        secret_key: str | bytes | None = None,
        secret_key_fallbacks: Iterable[str | bytes] = (),
        time_zone: str | None = None,
    ) -> list[ConfigError]:
        """Every problem :meth:`from_dict` would raise, at most one per key (for system checks)."""
        errors: list[ConfigError] = []
        cls._parse(q_cluster, cluster, secret_key, secret_key_fallbacks, time_zone, errors)
        return errors

    @classmethod
    def _parse(cls, q_cluster: Any, cluster: Any, secret_key: Any, fallbacks: Any,
               time_zone: Any, errors: list[ConfigError]) -> Config | None:
        if q_cluster is None:
            q_cluster = {}
        if not isinstance(q_cluster, Mapping):
            errors.append(ConfigError(f"Q_CLUSTER must be a dict, got {_show(q_cluster, _Path())}",
                                      key="Q_CLUSTER"))
            return None
        values = _read_level(q_cluster, _Path(), errors=errors)
        if errors:  # one error per key; what follows would only repeat them
            return None
        alts = values.get("alt_clusters", FrozenMap())

        source = "the cluster argument"
        if cluster is None:
            cluster = os.environ.get("Q_CLUSTER_NAME") or None
            source = "the Q_CLUSTER_NAME environment variable"
        with _collecting(errors):
            if cluster is not None:
                if not isinstance(cluster, str) or not cluster:
                    raise ConfigError(f"the cluster name must be a non-empty string, "
                                      f"got {_show(cluster, _Path())} (from {source})",
                                      key="cluster_name")
                name = values.get("name", "default")
                if cluster not in (name, values.get("cluster_name") or name):
                    if cluster not in alts:
                        raise _unknown_cluster(cluster, source, name, alts)
                    # A shallow merge over the root keys, as Django Q2 does.
                    values.update(alts[cluster])
                values["cluster_name"] = cluster
            if time_zone is not None and "time_zone" not in values:
                values["time_zone"] = _Check(
                    "a time zone name such as 'Europe/Paris' or None", _time_zone
                )(time_zone, _Path(root="TIME_ZONE"))
            values["secret_key"] = _secret_key(secret_key)
            values["secret_key_fallbacks"] = _secret_key_fallbacks(fallbacks)
        if errors:
            return None
        with _collecting(errors):
            return cls(**values)
        return None

    # -- using

    @property
    def queue(self) -> str:
        """The queue this cluster consumes (its ``cluster_name``)."""
        return self.cluster_name

    @property
    def alt_cluster_names(self) -> tuple[str, ...]:
        """The names of the ``ALT_CLUSTERS`` entries."""
        return tuple(self.alt_clusters)

    def broker_connection_options(self) -> FrozenMap:
        """Django Q's connection keys this config sets (``redis``, ``django_redis``,
        ``sqs``, ``mongo`` with ``mongo_db``, ...), for a ``broker_class`` broker.

        Django Q2 builds that class with the queue alone and the class reads its
        connection from ``Conf``. Here :func:`qhive.drivers.build_driver` passes it
        each of these its ``__init__`` takes as a keyword (a subclass of the Redis
        broker gets ``redis``); the class reads any other from ``self.config``.
        """
        options: dict[str, Any] = {}
        for key, broker in LEGACY_BROKER_KEYS.items():
            if broker is not None and getattr(self, key) is not None:
                options.update(_legacy_options(key, self))
        return FrozenMap(options)

    def warnings(self) -> list[str]:
        """Settings that are legal but probably not what was meant."""
        out = []
        if self.timeout is not None and self.timeout >= self.retry:
            out.append(
                f"Q_CLUSTER['retry'] ({self.retry}) should be larger than Q_CLUSTER['timeout'] "
                f"({self.timeout}): a task still running after retry seconds is delivered again "
                f"by brokers with receipts and runs twice."
            )
        if self.name in self.alt_clusters:
            out.append(
                f"Q_CLUSTER['ALT_CLUSTERS'][{self.name!r}] is never used: {self.name!r} is the "
                f"name of the root cluster, which uses the root settings."
            )
        return out

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, safe to print (``qinfo --config``).

        The secret keys are left out; values of secret-looking keys (password,
        token, key, dsn, ...) at any depth and passwords inside URLs are masked.
        """
        return {key: value for _, key, value in self._redacted_fields()}

    def __repr__(self) -> str:
        # Plugin tracing logs hook arguments, this config among them: the repr is redacted.
        shown = ", ".join(f"{attr}={value!r}" for attr, _, value in self._redacted_fields())
        return f"{type(self).__name__}({shown})"

    def _redacted_fields(self) -> Iterator[tuple[str, str, Any]]:
        """(attribute, Q_CLUSTER key, redacted value) of every field but the secret keys."""
        secrets = frozenset(s for s in (self.secret_key, *self.secret_key_fallbacks) if s)
        for field in dataclasses.fields(self):
            if field.name in ("secret_key", "secret_key_fallbacks"):
                continue
            setting = _SETTINGS_BY_ATTR.get(field.name)
            key = setting.key if setting else field.name
            yield field.name, key, _redact(key, getattr(self, field.name), secrets)


# --------------------------------------------------------------------------- parsing helpers


def _build_settings() -> dict[str, Setting]:
    table = {}
    for field in dataclasses.fields(Config):
        if _META not in field.metadata:
            continue
        key, check, doc = field.metadata[_META]
        key = key or field.name
        table[key] = Setting(key, field.name, field.default, check.expected, doc, check)
    return table


#: Every ``Q_CLUSTER`` key, in the order of :class:`Config`'s fields.
SETTINGS: Mapping[str, Setting] = FrozenMap(_build_settings())
_SETTINGS_BY_ATTR = {s.attr: s for s in SETTINGS.values()}

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

_SELECTORS = ("broker", *LEGACY_BROKER_KEYS, "default")

# Keys handed to the broker with the legacy key that selected it, when set.
_COMPANIONS = {
    "mongo": ("mongo_db",),
    "disque_nodes": ("disque_auth", "disque_fastack"),
    "django_redis": ("redis",),
    "redis": ("django_redis",),
}

# The root's identity: an ALT_CLUSTERS entry may not change it.
_ROOT_ONLY = {
    "name": "name is the signing salt and stats prefix shared by every cluster of the project; "
            "set it once at the root of Q_CLUSTER",
    "cluster_name": "a cluster's name is its key in ALT_CLUSTERS",
    "ALT_CLUSTERS": "ALT_CLUSTERS cannot be nested",
}

_REMOVED = {
    "has_replica": "it was removed in Django Q2; the scheduler follows the database router",
}


@contextlib.contextmanager
def _collecting(errors: list[ConfigError] | None) -> Iterator[None]:
    """Record a ConfigError in ``errors`` and go on, or let it propagate if there is no list."""
    try:
        yield
    except ConfigError as exc:
        if errors is None:
            raise
        errors.append(exc)


def _unknown_key(key: Any, known: Iterable[str], where: _Path) -> ConfigError:
    path = where / key
    if not isinstance(key, str):
        return ConfigError(f"{where} keys must be strings, got {_show(key, where)}", key=path.key)
    head = f"unknown key {path}" if where.parts else f"unknown Q_CLUSTER key {key!r}"
    if key in _REMOVED:
        return ConfigError(f"{head}: {_REMOVED[key]}", key=path.key)
    lowered = {k.lower(): k for k in known}
    match = difflib.get_close_matches(key.lower(), list(lowered), n=1)
    hint = (f" — did you mean {lowered[match[0]]!r}?" if match
            else " (see the configuration docs for the keys qhive knows)")
    return ConfigError(head + hint, key=path.key)


def _unknown_cluster(cluster: str, source: str, name: str, alts: Mapping[str, Any]) -> ConfigError:
    known = [name, *alts]
    match = difflib.get_close_matches(cluster, known, n=1)
    hint = f" — did you mean {match[0]!r}?" if match else ""
    return ConfigError(
        f"unknown cluster {cluster!r} (from {source}): it is neither Q_CLUSTER['name'] nor a key "
        f"of Q_CLUSTER['ALT_CLUSTERS']; known clusters: {', '.join(map(repr, known))}{hint}",
        key="ALT_CLUSTERS",
    )


def _read_level(mapping: Any, where: _Path, *, alt: bool = False,
                errors: list[ConfigError] | None = None) -> dict[str, Any]:
    """Check every key of one level (the root or an ALT_CLUSTERS entry): attr -> value."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where} must be a mapping of settings, got {_show(mapping, where)}",
                          key=where.key)
    out = {}
    for key, value in mapping.items():
        with _collecting(errors):
            setting = SETTINGS.get(key) if isinstance(key, str) else None
            if setting is None:
                raise _unknown_key(key, SETTINGS, where)
            if alt and key in _ROOT_ONLY:
                raise ConfigError(f"{where / key} cannot be set per cluster: {_ROOT_ONLY[key]}",
                                  key=(where / key).key)
            out[setting.attr] = setting.check(value, where / key)
    return out


def _secret_key(value: Any) -> Any:
    if value is None or isinstance(value, (str, bytes)):
        return value
    # Never show the value: it may be the secret itself.
    raise ConfigError(f"SECRET_KEY must be a str or bytes, got a {type(value).__name__}",
                      key="SECRET_KEY")


def _secret_key_fallbacks(value: Any) -> tuple[str | bytes, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError("SECRET_KEY_FALLBACKS must be a list of str or bytes, "
                          f"got a {type(value).__name__}", key="SECRET_KEY_FALLBACKS")
    keys = tuple(value)
    for key in keys:
        if not isinstance(key, (str, bytes)):
            raise ConfigError("SECRET_KEY_FALLBACKS must hold only str or bytes, "
                              f"got a {type(key).__name__}", key="SECRET_KEY_FALLBACKS")
    return keys


def _legacy_options(key: str, config: Config) -> dict[str, Any]:
    options = {key: getattr(config, key)}
    for companion in _COMPANIONS.get(key, ()):
        value = getattr(config, companion)
        if value != SETTINGS[companion].default:
            options[companion] = value
    return options


def _resolve_broker(config: Config) -> tuple[str, FrozenMap, str]:
    """(broker, options, selected_by): an explicit ``broker`` wins, then Django Q's keys
    in its priority order, else the ORM broker on the default database."""
    present = [k for k in LEGACY_BROKER_KEYS if getattr(config, k) is not None]
    explicit = config.broker_options
    if config.broker is not None:
        # broker="redis" next to redis={...}: the legacy key still supplies the options.
        owned = [k for k in present if LEGACY_BROKER_KEYS[k] == config.broker]
        legacy = _legacy_options(owned[0], config) if owned else {}
        return config.broker, FrozenMap({**legacy, **explicit}), "broker"
    if present:
        key = present[0]
        if LEGACY_BROKER_KEYS[key] is None:
            # broker_class names the broker; its connection keys are offered to it when it
            # is built (Config.broker_connection_options), not forced on it as options.
            return getattr(config, key), FrozenMap(explicit), key
        return LEGACY_BROKER_KEYS[key], FrozenMap({**_legacy_options(key, config), **explicit}), key
    return "orm", FrozenMap(explicit), "default"
