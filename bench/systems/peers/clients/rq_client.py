"""Benchmark client for RQ (runs in RQ's venv, cwd = the work directory).

``python rq_client.py WORKLOAD N`` — see bench/systems/workloads.py.
"""
import sys

import workloads
from rq.registry import FinishedJobRegistry
from rq_bench_tasks import RESULT_TTL, add, queue, size, sleep_ms

q = queue()
finished = FinishedJobRegistry(queue=q)
TASKS = {"add": add, "sleep_ms": sleep_ms, "size": size}


def enqueue(i):
    name, args = workloads.task_call(i)
    return q.enqueue(TASKS[name], *args, result_ttl=RESULT_TTL)


def is_done(job):
    return job.latest_result() is not None  # one XREVRANGE of rq:results:<id>


def count():
    return finished.get_job_count(cleanup=False)  # one ZCARD


if __name__ == "__main__":
    sys.exit(workloads.main(enqueue, is_done, count))
