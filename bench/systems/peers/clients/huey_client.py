"""Benchmark client for Huey (runs in Huey's venv, cwd = the work directory).

``python huey_client.py WORKLOAD N`` — see bench/systems/workloads.py.
"""
import sys

import workloads
from huey_bench_tasks import add, huey, size, sleep_ms

TASKS = {"add": add, "sleep_ms": sleep_ms, "size": size}


def enqueue(i):
    name, args = workloads.task_call(i)
    return TASKS[name](*args)


def is_done(result):
    return result.is_ready()  # one read of the result hash (the result is then cached)


def count():
    return huey.storage.result_store_size()  # one HLEN


if __name__ == "__main__":
    sys.exit(workloads.main(enqueue, is_done, count))
