"""``Stat``: what one cluster reports about itself, for ``qmonitor`` and ``qinfo``.

Saved through the broker's statistics store (``Capabilities.stats``) every guard
cycle with a short expiry, so a cluster that dies disappears from the monitor.
Stored as JSON: statistics are read by other processes and must never need
unpickling.
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
    """One cluster's state. Field names follow Django Q's ``Stat``."""

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

    @staticmethod
    def key_prefix(project: str) -> str:
        return f"qhive:{project}:cluster:"

    def uptime(self) -> float:
        return self.timestamp - self.tob

    def dumps(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def loads(cls, data: bytes) -> Stat:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(data).items() if k in fields})

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
        if not broker.capabilities.stats:
            return None
        raw = broker.get_stat(cls.key_prefix(project) + cluster_id)
        return cls.loads(raw) if raw else None
