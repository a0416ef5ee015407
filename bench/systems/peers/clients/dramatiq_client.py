"""Benchmark client for Dramatiq (runs in Dramatiq's venv, cwd = the work directory).

``python dramatiq_client.py WORKLOAD N`` — see bench/systems/workloads.py.
"""
import sys

import workloads
from dramatiq.results import ResultMissing
from dramatiq_bench_tasks import add, result_backend, size, sleep_ms

TASKS = {"add": add, "sleep_ms": sleep_ms, "size": size}


def enqueue(i):
    name, args = workloads.task_call(i)
    return TASKS[name].send(*args)


def is_done(message):
    try:
        result_backend.get_result(message)  # one LINDEX, non-blocking
    except ResultMissing:
        return False
    return True


def count():
    return result_backend.client.dbsize()  # the results have a Redis db of their own


if __name__ == "__main__":
    sys.exit(workloads.main(enqueue, is_done, count))
