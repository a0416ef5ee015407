"""Celery on Redis: broker and result backend on Redis, a prefork pool of 2 processes."""

from __future__ import annotations

from pathlib import Path

from ..base import Services
from ._common import REDIS_DBS, PeerSystem

TASKS = '''\
"""Celery benchmark project: the app and its one task (written by bench/systems/peers)."""
import time

from celery import Celery

app = Celery("celery_bench_tasks", broker={broker_url!r}, backend={results_url!r})
# Celery's defaults otherwise: prefetch multiplier 4, early acks, result_expires 1 day.
app.conf.broker_connection_retry_on_startup = True


@app.task
def add(a, b):
    return a + b


@app.task
def sleep_ms(ms):
    time.sleep(ms / 1000)
    return ms


@app.task
def size(data):
    return len(data)
'''


class CelerySystem(PeerSystem):
    name = "celery"
    requirements = ["celery[redis]>=5.7.0"]
    key_packages = ["celery", "kombu", "billiard", "redis"]
    settings = (
        "Redis as broker (db {b}) and result backend (db {r}); "
        "`celery -A celery_bench_tasks worker --pool=prefork --concurrency=2 --loglevel=WARNING` "
        "(main process + 2 prefork children; prefetch multiplier, acks, gossip/mingle/heartbeat "
        "left at Celery's defaults). Enqueue: `add.delay(i, i)`. A round trip polls "
        "`AsyncResult.ready()` (one GET) every 5 ms; drain/results count results with one "
        "DBSIZE of the result-backend db every 50 ms."
    ).format(b=REDIS_DBS["celery"][0], r=REDIS_DBS["celery"][1])

    def tasks_module(self, broker_url: str, results_url: str) -> str:
        return TASKS.format(broker_url=broker_url, results_url=results_url)

    def worker_command(self, workdir: Path, services: Services,
                       workers: int = 2) -> tuple[list[str], dict[str, str]]:
        return ([str(self.python), "-m", "celery", "-A", self.tasks_module_name, "worker",
                 "--pool=prefork", f"--concurrency={workers}", "--loglevel=WARNING",
                 "--hostname=bench-celery@%h"],
                self.env(Path(workdir)))


SYSTEMS = [CelerySystem()]
