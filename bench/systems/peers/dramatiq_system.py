"""Dramatiq on Redis: ``RedisBroker`` with the Results middleware, ``dramatiq -p 2 -t 1``."""

from __future__ import annotations

from pathlib import Path

from ..base import Services
from ._common import REDIS_DBS, PeerSystem

TASKS = '''\
"""Dramatiq benchmark project: broker, Results middleware and one actor
(written by bench/systems/peers)."""
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

result_backend = RedisBackend(url={results_url!r})
broker = RedisBroker(url={broker_url!r})
broker.add_middleware(Results(backend=result_backend))  # result_ttl: the default, 10 min
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def add(a, b):
    return a + b


@dramatiq.actor(store_results=True)
def sleep_ms(ms):
    time.sleep(ms / 1000)
    return ms


@dramatiq.actor(store_results=True)
def size(data):
    return len(data)
'''


class DramatiqSystem(PeerSystem):
    name = "dramatiq"
    requirements = ["dramatiq[redis]>=2.2.1"]
    key_packages = ["dramatiq", "redis"]
    settings = (
        "`RedisBroker` on Redis db {b}, `Results` middleware with `RedisBackend` on db {r}; "
        "`dramatiq -p 2 -t 1 dramatiq_bench_tasks` (a main process + 2 worker processes of "
        "1 thread each; prefetch and idle back-off at Dramatiq's defaults: the consumer polls "
        "with back-off up to 1 s when the queue is empty). Enqueue: `add.send(i, i)`. "
        "A round trip polls `backend.get_result(message)` (one LINDEX) every 5 ms; "
        "drain/results count results with one DBSIZE of the results db every 50 ms."
    ).format(b=REDIS_DBS["dramatiq"][0], r=REDIS_DBS["dramatiq"][1])

    def tasks_module(self, broker_url: str, results_url: str) -> str:
        return TASKS.format(broker_url=broker_url, results_url=results_url)

    def worker_command(self, workdir: Path, services: Services,
                       workers: int = 2) -> tuple[list[str], dict[str, str]]:
        return ([str(self.python), "-m", "dramatiq", "--processes", str(workers), "--threads", "1",
                 self.tasks_module_name],
                self.env(Path(workdir)))


SYSTEMS = [DramatiqSystem()]
