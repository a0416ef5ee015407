"""RQ on Redis: ``rq worker-pool -n 2`` (2 workers, each forking a work horse per job)."""

from __future__ import annotations

from pathlib import Path

from ..base import Services
from ._common import REDIS_DBS, PeerSystem

TASKS = '''\
"""RQ benchmark project: the queue and its one task (written by bench/systems/peers)."""
import time

from redis import Redis
from rq import Queue

REDIS_URL = {broker_url!r}
RESULT_TTL = 3600  # s; RQ's default is 500, kept long enough to read every result


def add(a, b):
    return a + b


def sleep_ms(ms):
    time.sleep(ms / 1000)
    return ms


def size(data):
    return len(data)


def queue():
    return Queue("default", connection=Redis.from_url(REDIS_URL))
'''


class RQSystem(PeerSystem):
    name = "rq"
    requirements = ["rq>=3.0.0"]
    key_packages = ["rq", "redis"]
    settings = (
        "Redis db {b} for queue and results; `rq worker-pool -n 2 -l WARNING default` "
        "(a pool process + 2 workers of RQ's default class `rq.Worker`, which forks a work "
        "horse for every job). Enqueue: `queue.enqueue(add, i, i, result_ttl=3600)`. A round "
        "trip polls `job.latest_result()` (one XREVRANGE) every 5 ms; drain/results count "
        "the `FinishedJobRegistry` (one ZCARD; written in the same MULTI as the result) "
        "every 50 ms."
    ).format(b=REDIS_DBS["rq"][0])

    def tasks_module(self, broker_url: str, results_url: str) -> str:
        return TASKS.format(broker_url=broker_url)

    def worker_command(self, workdir: Path, services: Services,
                       workers: int = 2) -> tuple[list[str], dict[str, str]]:
        broker_url, _ = self.urls(services)
        return ([str(self.python), "-m", "rq.cli", "worker-pool", "--url", broker_url,
                 "--num-workers", str(workers), "--logging-level", "WARNING", "default"],
                self.env(Path(workdir)))


SYSTEMS = [RQSystem()]
