"""Benchmark client for Celery (runs in Celery's venv, cwd = the work directory).

``python celery_client.py WORKLOAD N`` — see bench/systems/workloads.py.
"""
import sys

import workloads
from celery_bench_tasks import add, app, size, sleep_ms

TASKS = {"add": add, "sleep_ms": sleep_ms, "size": size}


def enqueue(i):
    name, args = workloads.task_call(i)
    return TASKS[name].delay(*args)


def is_done(result):
    return result.ready()  # one GET of celery-task-meta-<id>


def count():
    return app.backend.client.dbsize()  # the result backend has a Redis db of its own


if __name__ == "__main__":
    sys.exit(workloads.main(enqueue, is_done, count))
