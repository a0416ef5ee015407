"""``Stat``: what one cluster reports about itself, for ``qmonitor``, ``qinfo`` and
``qmemory``.

Saved through the broker's statistics store (``Capabilities.stats``) every guard
cycle with a short expiry, so a cluster that dies disappears from the monitor.
No shared cache is needed: the ORM broker keeps statistics in its own table,
the Redis broker in Redis. Stored as JSON: statistics are read by other
processes and must never need unpickling.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qhive.contracts import Broker

STARTING, IDLE, WORKING, STOPPING, STOPPED = "Starting", "Idle", "Working", "Stopping", "Stopped"


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
    :ivar task_q_size: tasks taken from the broker and not yet running (``TQ``).
    :ivar done_q_size: results waiting to be saved (``RQ``).
    :ivar busy: workers running a task now.
    :ivar processed: tasks whose result this cluster has saved; ``failed`` of them failed.
    :ivar tob: time of birth, seconds since the epoch (the cluster's clock).
    :ivar timestamp: when this stat was saved (the cluster's clock).
    :ivar sentinel: the pid of the sentinel process (the same as ``pid``).
    :ivar pusher: Django Q's pusher pid: the pusher is a thread of the sentinel here,
        so this is the sentinel's pid.
    :ivar monitor: Django Q's monitor pid (it saves results): a thread of the
        sentinel too, so the sentinel's pid; its memory is part of the sentinel's.
    :ivar configured_workers: the ``workers`` setting of the cluster; ``Pool``
        below it means workers are missing (0: unknown, from an older qhive).
    :ivar queue_limit: the ``queue_limit`` setting (``None``: unbounded).
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

    # Django Q's three pids: the pusher and the monitor are threads of the sentinel here.
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
    def loads(cls, data: bytes) -> Stat:
        values = json.loads(data)
        if not isinstance(values, dict):
            raise ValueError(f"a stat is a JSON object, got {type(values).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in fields})

    def save(self, broker: Broker, project: str, ttl: float) -> None:
        self.timestamp = time.time()
        broker.set_stat(self.key_prefix(project) + self.cluster_id, self.dumps(), ttl)

    @classmethod
    def get_all(cls, broker: Broker, project: str) -> list[Stat]:
        """Every live cluster of ``project`` (the ``name`` setting), ALT clusters included."""
        if not broker.capabilities.stats:
            return []
        stats = []
        for raw in broker.get_stats(cls.key_prefix(project)):
            try:
                stats.append(cls.loads(raw))
            except (ValueError, TypeError):
                continue  # a cluster of another version; skip rather than break qmonitor
        return sorted(stats, key=lambda s: (s.name, s.host, s.pid))

    @classmethod
    def get(cls, broker: Broker, project: str, cluster_id: str) -> Stat | None:
        """The live stat of one cluster of ``project``, or None (stopped, unknown, or
        saved by an incompatible version)."""
        if not broker.capabilities.stats:
            return None
        raw = broker.get_stat(cls.key_prefix(project) + cluster_id)
        if not raw:
            return None
        try:
            return cls.loads(raw)
        except (ValueError, TypeError):
            return None
