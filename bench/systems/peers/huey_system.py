"""Huey on Redis: ``RedisHuey`` and ``huey_consumer -w 2 -k process``."""

from __future__ import annotations

from pathlib import Path

from ..base import Services
from ._common import REDIS_DBS, PeerSystem

TASKS = '''\
"""Huey benchmark project: the Huey instance and its one task (written by bench/systems/peers)."""
import time

from huey import RedisHuey

# Huey's defaults otherwise: blocking dequeue (BRPOP), results kept in a Redis hash.
huey = RedisHuey("bench", url={broker_url!r})


@huey.task()
def add(a, b):
    return a + b


@huey.task()
def sleep_ms(ms):
    time.sleep(ms / 1000)
    return ms  # not None: Huey keeps no None result, and the client counts results


@huey.task()
def size(data):
    return len(data)
'''


class HueySystem(PeerSystem):
    name = "huey"
    requirements = ["huey>=3.5.4", "redis>=8.1.0"]
    key_packages = ["huey", "redis"]
    settings = (
        "`RedisHuey` on Redis db {b} (queue and result store; blocking BRPOP dequeue); "
        "`huey_consumer huey_bench_tasks.huey -w 2 -k process -q` (a consumer process, "
        "2 worker processes and Huey's scheduler process; log level WARNING). Enqueue: "
        "`add(i, i)`. A round trip polls `Result.is_ready()` (one read of the result hash) "
        "every 5 ms; drain/results count results with `storage.result_store_size()` "
        "(one HLEN) every 50 ms."
    ).format(b=REDIS_DBS["huey"][0])

    def tasks_module(self, broker_url: str, results_url: str) -> str:
        return TASKS.format(broker_url=broker_url)

    def worker_command(self, workdir: Path, services: Services,
                       workers: int = 2) -> tuple[list[str], dict[str, str]]:
        return ([str(self.python), "-m", "huey.bin.huey_consumer",
                 f"{self.tasks_module_name}.huey", "--workers", str(workers),
                 "--worker-type", "process",
                 "--quiet"],
                self.env(Path(workdir)))


SYSTEMS = [HueySystem()]
