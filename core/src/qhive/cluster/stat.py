"""``Stat``: what one cluster reports about itself, for ``qmonitor``, ``qinfo`` and
``qmemory``; ``StatStore``: where the clusters of a project keep their stats.

Where is chosen once, by :func:`choose_store`: the broker when it keeps
statistics (``Capabilities.stats``: the ORM broker in a table of its own, the
Redis broker in Redis), else the result store when it can
(``ResultStore.keeps_stats``: the ORM, Redis and shared-cache stores), else
nowhere — and the cluster says so, and why, when it starts; ``qinfo`` and
``qmonitor`` say it too. No shared Django cache is needed, unlike Django Q.

A cluster saves its stat every guard cycle with a short expiry, so a cluster
that dies disappears from the monitor. A stat is JSON (read by other
processes: it must never need unpickling), signed like a task with the
cluster's signer (keyed by the secret key, salted with the project ``name``,
verified with the fallback keys too). A stat that fails verification — saved
with another ``SECRET_KEY`` or altered — is skipped, as Django Q2 skips a
``BadSignature``: a process without the key can neither see the clusters nor
show forged ones.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from qhive.codec import build_codec
from qhive.errors import BadSignature, UnknownDriverError
from qhive.plugins import get_plugin_manager

if TYPE_CHECKING:
    from qhive.config import Config
    from qhive.contracts import Broker, ResultStore, Signer
    from qhive.pipeline import Pipeline

S = TypeVar("S", bound="Stat")

STARTING, IDLE, WORKING, STOPPING, STOPPED = "Starting", "Idle", "Working", "Stopping", "Stopped"

#: Signed with the stat: a signed task package is never taken for a stat, nor a stat
#: for a task (task packages start with ``b"Q"``).
_MAGIC = b"qhive.stat:"


@dataclasses.dataclass
class Stat:
    """One cluster's state. Field names follow Django Q's ``Stat``.

    :ivar cluster_id: the cluster's id, a uuid4 hex (Django Q's monitor shows its
        last 8 characters). Not a pid: a pid is only unique on one host.
    :ivar name: the cluster (queue) name: ``Q_CLUSTER['name']`` or an ALT cluster.
    :ivar host: the host name of the machine the cluster runs on.
    :ivar pid: the pid of the sentinel (the ``qcluster`` process).
    :ivar status: ``Starting``, ``Idle``, ``Working``, ``Stopping`` or ``Stopped``.
    :ivar workers: the pids of the worker processes in the pool now.
    :ivar reincarnations: workers started to replace one that recycled, died or
        timed out.
    :ivar task_q_size: tasks the workers took from the broker and did not start (``TQ``).
    :ivar done_q_size: results waiting to be saved (``RQ``).
    :ivar busy: workers running a task now.
    :ivar processed: tasks whose result this cluster has saved; ``failed`` of them failed.
    :ivar tob: time of birth, seconds since the epoch (the cluster's clock).
    :ivar timestamp: when this stat was saved (the cluster's clock).
    :ivar sentinel: the pid of the sentinel process (the same as ``pid``).
    :ivar pusher: Django Q's pusher pid. There is no pusher here (each worker takes its
        own tasks), so this is the sentinel's pid.
    :ivar monitor: Django Q's monitor pid: workers save their own results here, and the
        sentinel's monitor thread saves the failures of tasks whose worker died; the
        sentinel's pid.
    :ivar configured_workers: the ``workers`` setting of the cluster; ``Pool``
        below it means workers are missing (0: unknown, from an older qhive).
    :ivar queue_limit: the ``queue_limit`` setting (``None``: unbounded).
    :ivar running: the tasks the workers run now, one dict each: ``id``, ``name``,
        ``func``, ``group``, ``worker`` (pid), ``started`` (seconds since the epoch),
        ``attempt``, ``progress`` and ``note`` (see :mod:`qhive.running`).
    """

    cluster_id: str
    name: str  # the cluster (queue) name
    host: str
    pid: int
    status: str = STARTING
    workers: list[int] = dataclasses.field(default_factory=list)
    reincarnations: int = 0
    task_q_size: int = 0  # tasks taken from the broker, not yet running
    done_q_size: int = 0  # results waiting to be saved
    busy: int = 0  # workers running a task
    processed: int = 0
    failed: int = 0
    tob: float = dataclasses.field(default_factory=time.time)  # time of birth
    timestamp: float = dataclasses.field(default_factory=time.time)
    configured_workers: int = 0
    queue_limit: int | None = None
    running: list[dict] = dataclasses.field(default_factory=list)

    # Django Q's three pids: the sentinel's for all three here.
    sentinel = pusher = monitor = property(lambda self: self.pid)

    @staticmethod
    def key_prefix(project: str) -> str:
        return f"qhive:{project}:cluster:"

    def uptime(self) -> float:
        """Seconds from the cluster's birth to this stat's save, both read on the
        cluster's clock (so another host's clock does not skew it)."""
        return max(self.timestamp - self.tob, 0.0)

    def empty_queues(self) -> bool:
        """True when no task waits in the task queue and no result in the result queue."""
        return self.task_q_size + self.done_q_size == 0

    @property
    def short_id(self) -> str:
        """The last 8 characters of :attr:`cluster_id`, as ``qmonitor`` shows it."""
        return self.cluster_id[-8:]

    def dumps(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def loads(cls: type[S], data: bytes) -> S:
        values = json.loads(data)
        if not isinstance(values, dict):
            raise ValueError(f"a stat is a JSON object, got {type(values).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in fields})

    def save(self, broker: Broker, project: str, ttl: float) -> None:
        """Save this stat in ``broker``'s statistics, signed with its config's key.
        Clusters use :meth:`store_for` (the broker or the result store) instead."""
        StatStore.of_broker(broker, project).save(self, ttl)

    @classmethod
    def get_all(cls, broker: Broker, project: str) -> list[Stat]:
        """Every live cluster of ``project`` (the ``name`` setting) in ``broker``'s
        statistics, ALT clusters included; [] when the broker keeps none."""
        return StatStore.of_broker(broker, project).get_all(cls)

    @classmethod
    def get(cls, broker: Broker, project: str, cluster_id: str) -> Stat | None:
        """The live stat of one cluster of ``project`` in ``broker``'s statistics, or
        None (stopped, unknown, saved by an incompatible version, or not verified)."""
        return StatStore.of_broker(broker, project).get(cluster_id, cls)

    @staticmethod
    def store_for(pipeline: Pipeline) -> StatStore:
        """Where the clusters of ``pipeline``'s project keep their stats: the
        cluster saves there, ``qmonitor`` and ``qinfo`` read there (:func:`choose_store`)."""
        return choose_store(pipeline.broker, lambda: pipeline.result_store,
                            pipeline.codec.signer, pipeline.config.name)


class StatStore:
    """The stats of one project's clusters, in the broker or the result store:
    saved signed, read only when they verify.

    :param keeper: the broker or result store that holds them (``set_stat``,
        ``get_stat``, ``get_stats``); None: they cannot be kept (see ``reason``).
    :param signer: signs and verifies them: the cluster's signer.
    :param project: the project ``name``: every key starts with ``qhive:<name>:cluster:``.
    :param where: where they are, for people (``"the broker (RedisBroker)"``).
    :param reason: why they cannot be kept, when ``keeper`` is None.
    """

    def __init__(self, keeper: Broker | ResultStore | None, signer: Signer | None,
                 project: str, *, where: str = "", reason: str = "") -> None:
        if keeper is not None and signer is None:
            raise ValueError("cluster statistics are signed: a StatStore with a keeper "
                             "needs the cluster's signer")
        self.keeper = keeper
        self.signer = signer
        self.project = project
        self.where = where
        self.reason = reason
        self.prefix = Stat.key_prefix(project)

    @classmethod
    def of_broker(cls, broker: Broker, project: str) -> StatStore:
        """``broker``'s statistics, signed with the key of ``broker.config``."""
        if not broker.capabilities.stats:
            return cls(None, None, project,
                       reason=f"the broker ({type(broker).__name__}) keeps no statistics")
        return cls(broker, _signer(broker.config), project,
                   where=f"the broker ({type(broker).__name__})")

    def save(self, stat: Stat, ttl: float) -> None:
        """Save ``stat`` for ``ttl`` seconds (nothing when no statistics can be kept)."""
        stat.timestamp = time.time()
        if self.keeper is None:
            return
        signed = self.signer.sign(_MAGIC + stat.dumps())  # type: ignore[union-attr]
        self.keeper.set_stat(self.prefix + stat.cluster_id, signed, ttl)

    def get_all(self, kind: type[S] = Stat) -> list[S]:  # type: ignore[assignment]
        """Every live cluster of the project, ALT clusters included, whose stat
        verifies, as ``kind`` (a subclass of :class:`Stat`)."""
        if self.keeper is None:
            return []
        stats = [s for raw in self.keeper.get_stats(self.prefix) if (s := self._load(raw, kind))]
        return sorted(stats, key=lambda s: (s.name, s.host, s.pid))

    def get(self, cluster_id: str, kind: type[S] = Stat) -> S | None:  # type: ignore[assignment]
        """The live stat of one cluster, or None (stopped, unknown, saved by an
        incompatible version, or not verified)."""
        if self.keeper is None:
            return None
        raw = self.keeper.get_stat(self.prefix + cluster_id)
        return self._load(raw, kind) if raw else None

    def _load(self, signed: bytes, kind: type[S]) -> S | None:
        try:
            data = self.signer.unsign(bytes(signed))  # type: ignore[union-attr]
        except BadSignature:  # another SECRET_KEY or name, or forged: not ours to show
            return None
        if not data.startswith(_MAGIC):
            return None
        try:
            return kind.loads(data[len(_MAGIC):])
        except (ValueError, TypeError):  # a cluster of another version: skip, not break qmonitor
            return None

    def __repr__(self) -> str:
        return f"<StatStore {self.project!r} in {self.where or 'nowhere'}>"


def choose_store(broker: Broker, result_store: Callable[[], ResultStore], signer: Signer,
                 project: str) -> StatStore:
    """Where the clusters of ``project`` keep their stats — the one place that decides,
    for the cluster and for every reader: the broker when it keeps statistics
    (``Capabilities.stats``), else the result store when it can
    (``ResultStore.keeps_stats``), else nowhere, with the reason.

    :param result_store: returns the result store; only called when the broker keeps
        no statistics (a reader need not build the store otherwise).
    """
    broker_name = type(broker).__name__
    if broker.capabilities.stats:
        return StatStore(broker, signer, project, where=f"the broker ({broker_name})")
    store = result_store()
    store_name = type(store).__name__
    if store.keeps_stats:
        return StatStore(store, signer, project,
                         where=f"the result store ({store_name}; the broker {broker_name} "
                               f"keeps none)")
    return StatStore(None, signer, project, reason=(
        f"no cluster statistics can be kept: the broker ({broker_name}) has no place for "
        f"them (Capabilities.stats) and the result store ({store_name}) cannot keep them "
        f"(keeps_stats); qmonitor, qinfo and qmemory will not see running clusters. To "
        f"see them, use a result store that keeps statistics: 'orm', 'redis', or 'cache' "
        f"on a cache that processes share (Redis, Memcached, database; not LocMem)"))


def _signer(config: Config) -> Signer:
    """The signer of ``config``'s codec; one registered from code
    (``qhive_register_drivers``) is found too."""
    try:
        return build_codec(config).signer
    except UnknownDriverError:
        return build_codec(config, get_plugin_manager(config).driver_registry).signer
