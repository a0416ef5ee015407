"""``Q_CLUSTER`` parsed once into a typed, immutable :class:`Config`.

Every Django Q / Django Q2 key is accepted with its documented default and
meaning, plus qhive's own keys (``broker``, ``result_store``, ``serializer``,
``signer``, ``plugins``, ...). The fields of :class:`Config` are the table that
drives everything: each carries its ``Q_CLUSTER`` key, default, check and a
one-line description in its metadata (see :data:`SETTINGS`). Anything wrong is
a :class:`qhive.errors.ConfigError` naming the key, what was expected and what
was given, so a bad setting fails at startup and never inside a worker.

The table is this module; what it uses sits beside it, and none of those
modules imports this one: :mod:`~qhive.config.checks` (the checks of the
table), :mod:`~qhive.config.frozen` (:class:`FrozenMap`, the read-only mapping
of mapping-valued settings), :mod:`~qhive.config.redaction` (secrets masked in
reprs, ``qinfo --config`` and error messages) and :mod:`~qhive.config.brokers`
(the broker Django Q's keys select).

Nothing here imports Django or a broker client: the Django integration passes
``SECRET_KEY``, ``SECRET_KEY_FALLBACKS`` and ``TIME_ZONE`` in as arguments.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from qhive.config.brokers import (
    LEGACY_BROKER_KEYS,
    SELECTORS,
    connection_options,
    resolve_broker,
)
from qhive.config.checks import (
    DOTTED,
    Check,
    KeyPath,
    boolean,
    cached_value,
    choice,
    collecting,
    driver,
    either,
    error_reporters_value,
    integer,
    log_level_value,
    mapping,
    number,
    queue_limit_value,
    secret_key_fallbacks_value,
    secret_key_value,
    show,
    strings,
    text,
    time_zone_value,
    unknown_key,
)
from qhive.config.frozen import FrozenMap
from qhive.config.redaction import MASK as MASK  # re-exported: public here before the split
from qhive.config.redaction import redact
from qhive.errors import ConfigError, did_you_mean

__all__ = ["LEGACY_BROKER_KEYS", "SETTINGS", "Config", "FrozenMap", "Setting"]

_META = "qhive"


# --------------------------------------------------------------------------- nested tables


_PLUGIN_KEYS: dict[str, tuple[Check, Any]] = {
    "disabled": (strings(), ()),
    "strict": (boolean(), False),
    "trace": (boolean(), False),
}


def _plugins(value: Any, path: KeyPath) -> Any:
    """Loading rules, and the options of hook-only plugins by entry-point name
    (``"prometheus": {"port": 9191}``), which the plugin checks and reads itself."""
    value = mapping()(value, path)
    out = {key: default for key, (_, default) in _PLUGIN_KEYS.items()}
    for key, item in value.items():
        if key in _PLUGIN_KEYS:
            out[key] = _PLUGIN_KEYS[key][0](item, path / key)
        elif isinstance(key, str) and isinstance(item, Mapping):
            out[key] = FrozenMap(item)
        else:
            raise unknown_key(key, _PLUGIN_KEYS, path)
    return FrozenMap(out)


def _alt_clusters(value: Any, path: KeyPath) -> Any:
    value = mapping()(value, path)
    return FrozenMap({
        name: FrozenMap(_read_level(entry, path / name, alt=True))
        for name, entry in value.items()
    })


# --------------------------------------------------------------------------- the table


class _Auto(enum.Enum):
    """Default of a setting derived from others (``workers``, ``queue_limit``)."""

    AUTO = "AUTO"

    def __repr__(self) -> str:
        return "AUTO"


_AUTO = _Auto.AUTO
#: The default ``queue_limit`` per worker: the most tasks a worker takes at once.
QUEUE_LIMIT_PER_WORKER = 50


@dataclasses.dataclass(frozen=True)
class Setting:
    """One ``Q_CLUSTER`` key: its attribute, default, what it accepts and what it does."""

    key: str
    attr: str
    default: Any
    expected: str
    doc: str
    check: Callable[[Any, KeyPath], Any] = dataclasses.field(repr=False, compare=False)


def _key(default: Any, check: Check | Callable[[Any, KeyPath], Any], doc: str, *,
         expected: str | None = None, key: str | None = None) -> Any:
    """A :class:`Config` field that is a ``Q_CLUSTER`` key."""
    if not isinstance(check, Check):
        check = Check(expected or "", check)
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
    name: str = _key("default", text(),
                     "Project name: signing salt, stats prefix, queue of the root cluster.")
    cluster_name: str = _key(None, text(none=True),
                             "The queue this cluster consumes; None: the same as name.")
    label: str = _key("Django Q", text(), "Label of the admin pages.")

    # -- the cluster's processes
    workers: int = _key(_AUTO, integer(1),
                        "Worker processes; default: the CPU count (4 if unknown).")
    daemonize_workers: bool = _key(True, boolean(),
                                   "Django Q2's switch for tasks that fork: accepted and "
                                   "no longer needed (workers are plain forks, and any task "
                                   "may start processes).")
    recycle: int = _key(500, integer(0), "Tasks a worker runs before it is replaced; 0: never.")
    max_rss: int | None = _key(None, integer(1, none=True),
                               "Resident memory (KB) after which a worker is replaced.")
    timeout: float | None = _key(None, number(none=True),
                                 "Seconds a task may run before it is killed; None: no limit.")
    guard_cycle: float = _key(0.5, number(below=60), "Seconds between two guard loop rounds.")
    queue_limit: int | None = _key(
        _AUTO, queue_limit_value, "Tasks one cluster's workers hold, taken from the broker "
                                  "at once (each its share, in batches of about 50 ms of "
                                  "work); default 50 per worker (Django Q2: workers**2); "
                                  "None (or 0, as in Django Q2): 100 per worker.",
        expected="an int >= 1 or None (unbounded)")
    cpu_affinity: int = _key(0, integer(0), "Cores per worker (needs psutil); 0: no affinity.")
    scheduler: bool = _key(True, boolean(), "Run schedules in this cluster.")
    scheduler_interval: float = _key(
        30, number(), "Seconds between two looks for new or changed schedules; the scheduler "
                      "also wakes when the next schedule is due.")
    catch_up: bool = _key(True, boolean(), "Replay the schedule slots missed while down.")
    time_zone: str | None = _key(
        None, time_zone_value, "Time zone of the scheduler; from_dict falls back to TIME_ZONE.",
        expected="a time zone name such as 'Europe/Paris' or None")

    # -- tasks and delivery
    retry: float = _key(60, number(), "Seconds before a broker with receipts delivers "
                                      "an unacknowledged task again.")
    max_attempts: int = _key(0, integer(0), "Deliveries of a failing task before it is dropped; "
                                            "0: unlimited.")
    ack_failures: bool = _key(False, boolean(), "Acknowledge failed tasks too.")
    bulk: int = _key(1, integer(1), "Messages asked from the broker per dequeue.")
    poll: float = _key(0.2, number(), "Seconds between two looks at a broker that cannot block.")
    compress: bool = _key(False, boolean(), "zlib-compress task packages.")
    sync: bool = _key(False, boolean(), "Run every task synchronously in the caller (testing).")
    testing: bool = _key(False, boolean(),
                         "Test mode: shows the queued-task admin, fakes affinity.")

    # -- results, cache, logging
    save_limit: int = _key(250, integer(-1),
                           "Successes kept: 0 unlimited, -1 none; failures are always kept.")
    save_limit_per: str | None = _key(None, choice("group", "name", "func", none=True),
                                      "Apply save_limit per group, name or func.")
    cache: str = _key("default", text(), "Django cache alias for stats and cached results.")
    cached: bool | int = _key(False, cached_value, "Keep results in the cache (True or seconds).",
                              expected="True, False or an int number of seconds > 0")
    log_level: str = _key("INFO", log_level_value, "Level of the 'django-q' logger.",
                          expected="a logging level name such as 'INFO'")
    error_reporter: Mapping[str, Mapping[str, Any]] = _key(
        FrozenMap(), error_reporters_value, "Reporter name -> its options.",
        expected="a mapping of reporter name -> options")
    rollbar: Mapping[str, Any] | None = _key(
        None, mapping(none=True),
        "Django Q 0.x Rollbar options; the same as error_reporter={'rollbar': ...}.")

    # -- qhive's backends
    broker: str = _key(None, driver(none=True),
                       "Broker driver name or dotted path; None: chosen from the legacy keys.")
    broker_options: Mapping[str, Any] = _key(FrozenMap(), mapping(),
                                             "Keyword options of the broker driver.")
    broker_selected_by: str = dataclasses.field(default=None)  # type: ignore[assignment]
    result_store: str = _key("orm", driver(), "Result store driver name or dotted path.")
    result_store_options: Mapping[str, Any] = _key(FrozenMap(), mapping(),
                                                   "Keyword options of the result store.")
    serializer: str = _key("pickle", driver(), "Serializer driver name or dotted path.")
    signer: str = _key("hmac", driver(), "Signer driver name or dotted path.")
    plugins: Mapping[str, Any] = _key(
        FrozenMap({"disabled": (), "strict": False, "trace": False}), _plugins,
        "Plugin loading: disabled (names), strict (fail on a broken plugin), trace (log hooks); "
        "and a hook-only plugin's options under its name.",
        expected="a mapping with keys disabled, strict, trace, and plugin name -> options")

    # -- Django Q's broker keys (see LEGACY_BROKER_KEYS)
    broker_class: str | None = _key(None, text(none=True, pattern=DOTTED,
                                               what="a dotted path such as 'pkg.mod.Broker'"),
                                    "Dotted path of a Broker class.")
    iron_mq: Mapping[str, Any] | None = _key(None, mapping(none=True), "IronMQ client options.")
    sqs: Mapping[str, Any] | None = _key(None, mapping(none=True), "Amazon SQS options.")
    orm: str | None = _key(None, text(none=True), "Database alias of the ORM broker.")
    mongo: Mapping[str, Any] | None = _key(None, mapping(none=True),
                                           "pymongo MongoClient options.")
    mongo_db: str | None = _key(None, text(none=True), "MongoDB database of the queues.")
    disque_nodes: tuple[str, ...] | None = _key(None, strings(none=True),
                                                "Disque nodes, 'host:port' each.")
    disque_auth: str | None = _key(None, text(none=True), "Disque password.")
    disque_fastack: bool = _key(False, boolean(), "Disque fast acknowledgements.")
    django_redis: str | None = _key(None, text(none=True), "django-redis cache alias.")
    redis: Mapping[str, Any] | str | None = _key(
        None, either(mapping(none=True), text(), expected="a mapping, a URL string or None"),
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
                self._set(setting.attr, setting.check(value, KeyPath((setting.key,))))
        self._set("secret_key", secret_key_value(self.secret_key))
        self._set("secret_key_fallbacks", secret_key_fallbacks_value(self.secret_key_fallbacks))
        # Derived values, computed once so that a pickled copy sees the same ones.
        if self.cluster_name is None:
            self._set("cluster_name", self.name)
        if self.workers is _AUTO:
            self._set("workers", os.cpu_count() or 4)
        if self.queue_limit is _AUTO:
            # Not Django Q2's workers**2 (a batch of 2 per worker at 2 workers): a broker
            # round trip, a save and an acknowledgement per 2 tasks cost 3x the CPU.
            self._set("queue_limit", self.workers * QUEUE_LIMIT_PER_WORKER)
        if self.rollbar is not None and "rollbar" not in self.error_reporter:
            self._set("error_reporter", FrozenMap({"rollbar": self.rollbar}) | self.error_reporter)
        if self.broker_selected_by not in (None, *SELECTORS):
            raise ConfigError(f"broker_selected_by must be one of {', '.join(SELECTORS)}, "
                              f"got {self.broker_selected_by!r}", key="broker_selected_by")
        if self.broker is None or self.broker_selected_by is None:
            broker, options, selected_by = resolve_broker(self)
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
            errors.append(ConfigError(f"Q_CLUSTER must be a dict, got {show(q_cluster, KeyPath())}",
                                      key="Q_CLUSTER"))
            return None
        values = _read_level(q_cluster, KeyPath(), errors=errors)
        if errors:  # one error per key; what follows would only repeat them
            return None
        alts = values.get("alt_clusters", FrozenMap())

        source = "the cluster argument"
        if cluster is None:
            cluster = os.environ.get("Q_CLUSTER_NAME") or None
            source = "the Q_CLUSTER_NAME environment variable"
        with collecting(errors):
            if cluster is not None:
                if not isinstance(cluster, str) or not cluster:
                    raise ConfigError(f"the cluster name must be a non-empty string, "
                                      f"got {show(cluster, KeyPath())} (from {source})",
                                      key="cluster_name")
                name = values.get("name", "default")
                if cluster not in (name, values.get("cluster_name") or name):
                    if cluster not in alts:
                        raise _unknown_cluster(cluster, source, name, alts)
                    # A shallow merge over the root keys, as Django Q2 does.
                    values.update(alts[cluster])
                values["cluster_name"] = cluster
            if time_zone is not None and "time_zone" not in values:
                values["time_zone"] = Check(
                    "a time zone name such as 'Europe/Paris' or None", time_zone_value
                )(time_zone, KeyPath(root="TIME_ZONE"))
            values["secret_key"] = secret_key_value(secret_key)
            values["secret_key_fallbacks"] = secret_key_fallbacks_value(fallbacks)
        if errors:
            return None
        with collecting(errors):
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

    @property
    def cluster_names(self) -> tuple[str, ...]:
        """Every cluster these settings define: the root one (``name``), then the keys
        of ``ALT_CLUSTERS``."""
        return tuple(dict.fromkeys([self.name, *self.alt_clusters]))

    def broker_connection_options(self) -> FrozenMap:
        """Django Q's connection keys this config sets (``redis``, ``django_redis``,
        ``sqs``, ``mongo`` with ``mongo_db``, ...), for a ``broker_class`` broker.

        Django Q2 builds that class with the queue alone and the class reads its
        connection from ``Conf``. Here :func:`qhive.drivers.build_driver` passes it
        each of these its ``__init__`` takes as a keyword (a subclass of the Redis
        broker gets ``redis``); the class reads any other from ``self.config``.
        """
        return connection_options(self)

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
            yield field.name, key, redact(key, getattr(self, field.name), secrets)


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

# The root's identity: an ALT_CLUSTERS entry may not change it.
_ROOT_ONLY = {
    "name": "name is the signing salt and stats prefix shared by every cluster of the project; "
            "set it once at the root of Q_CLUSTER",
    "cluster_name": "a cluster's name is its key in ALT_CLUSTERS",
    "ALT_CLUSTERS": "ALT_CLUSTERS cannot be nested",
}


def _unknown_cluster(cluster: str, source: str, name: str, alts: Mapping[str, Any]) -> ConfigError:
    known = [name, *alts]
    hint = did_you_mean(cluster, known)
    return ConfigError(
        f"unknown cluster {cluster!r} (from {source}): it is neither Q_CLUSTER['name'] nor a key "
        f"of Q_CLUSTER['ALT_CLUSTERS']; known clusters: {', '.join(map(repr, known))}{hint}",
        key="ALT_CLUSTERS",
    )


def _read_level(level: Any, where: KeyPath, *, alt: bool = False,
                errors: list[ConfigError] | None = None) -> dict[str, Any]:
    """Check every key of one level (the root or an ALT_CLUSTERS entry): attr -> value."""
    if not isinstance(level, Mapping):
        raise ConfigError(f"{where} must be a mapping of settings, got {show(level, where)}",
                          key=where.key)
    out = {}
    for key, value in level.items():
        with collecting(errors):
            setting = SETTINGS.get(key) if isinstance(key, str) else None
            if setting is None:
                raise unknown_key(key, SETTINGS, where)
            if alt and key in _ROOT_ONLY:
                raise ConfigError(f"{where / key} cannot be set per cluster: {_ROOT_ONLY[key]}",
                                  key=(where / key).key)
            out[setting.attr] = setting.check(value, where / key)
    return out
