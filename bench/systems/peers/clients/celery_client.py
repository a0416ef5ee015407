"""Benchmark client for Celery (runs in Celery's venv, cwd = the work directory).

``python celery_client.py WORKLOAD N`` — see bench/systems/workloads.py.
"""
import sys

import workloads
from celery_bench_tasks import add, app


def enqueue(i):
    return add.delay(i, i)


def is_done(result):
    return result.ready()  # one GET of celery-task-meta-<id>


def count():
    return app.backend.client.dbsize()  # the result backend has a Redis db of its own


if __name__ == "__main__":
    sys.exit(workloads.main(enqueue, is_done, count))
