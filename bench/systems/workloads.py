"""The workload loops every benchmark client runs — standard library only.

A client sets its system up, then calls :func:`main` with three functions:

* ``enqueue(i) -> handle``: queue ``add(i, i)`` and return what ``is_done`` needs (its id);
* ``is_done(handle) -> bool``: one look at the result store for that task's result;
* ``count() -> int``: the number of results in the result store, in one query.

``python client.py WORKLOAD N`` then prints one JSON line (the last line of stdout).
The loops poll at fixed intervals, the same for every system, so the client's own
polling costs the same everywhere: a single result every 5 ms, the count every 50 ms.
See ``bench/systems/base.py`` for what each workload returns.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

ROUND_TRIP_POLL = 0.005  # s between looks for one result (latency workloads)
COUNT_POLL = 0.05  # s between counts of all results (drain, results)
# Idle rounds sleep 5 s plus a random 0-1 s: a sleep of exactly 5 s keeps the phase of a
# broker polling every 0.2 s (or 1 s), and every round would then wait the same.
IDLE_SLEEP, IDLE_JITTER, IDLE_ROUNDS = 5.0, 1.0, 3
ROUND_TRIP_TIMEOUT = 60.0  # s; a round trip that takes longer fails the run


class WorkloadFailed(Exception):
    pass


def wait_count(count: Callable[[], int], target: int, timeout: float,
               on_first: Callable[[int], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    seen = False
    while True:
        done = count()
        if on_first and not seen and done > 0:
            seen = True
            on_first(done)
        if done >= target:
            return
        if time.monotonic() > deadline:
            raise WorkloadFailed(f"only {done} of {target} results after {timeout:.0f} s")
        time.sleep(COUNT_POLL)


def round_trip(enqueue: Callable[[int], Any], is_done: Callable[[Any], bool], i: int) -> float:
    t0 = time.perf_counter()
    handle = enqueue(i)
    deadline = t0 + ROUND_TRIP_TIMEOUT
    while not is_done(handle):
        if time.perf_counter() > deadline:
            raise WorkloadFailed(f"no result for task {handle!r} after {ROUND_TRIP_TIMEOUT:.0f} s")
        time.sleep(ROUND_TRIP_POLL)
    return (time.perf_counter() - t0) * 1000


def run(workload: str, n: int, enqueue: Callable[[int], Any], is_done: Callable[[Any], bool],
        count: Callable[[], int]) -> dict[str, Any]:
    """Run one workload and return its JSON-able outcome."""
    drain_timeout = 60 + n * 0.1  # generous (>= 10 tasks/s): a slow system is reported
    if workload in ("enqueue", "fill"):
        t0 = time.perf_counter()
        for i in range(n):
            enqueue(i)
        return {"seconds": time.perf_counter() - t0}
    if workload == "drain":
        base = count()
        t0 = time.perf_counter()
        for i in range(n):
            enqueue(i)
        te = time.perf_counter() - t0
        wait_count(count, base + n, drain_timeout)
        return {"seconds": time.perf_counter() - t0, "enqueue_seconds": te}
    if workload == "results":
        print("ready", flush=True)
        t0 = time.perf_counter()
        first: dict[str, float] = {}

        def on_first(done: int) -> None:
            first.update(t=time.perf_counter(), count=done)

        wait_count(count, n, drain_timeout, on_first)
        t1 = time.perf_counter()
        return {"seconds": t1 - t0, "steady_seconds": t1 - first["t"],
                "first_count": first["count"]}
    if workload == "latency":
        return {"latencies_ms": [round_trip(enqueue, is_done, i) for i in range(n)]}
    if workload == "idle_latency":
        latencies = []
        for i in range(IDLE_ROUNDS):
            time.sleep(IDLE_SLEEP + random.uniform(0, IDLE_JITTER))
            latencies.append(round_trip(enqueue, is_done, i))
        return {"latencies_ms": latencies}
    raise WorkloadFailed(f"unknown workload {workload!r}")


def main(enqueue: Callable[[int], Any], is_done: Callable[[Any], bool],
         count: Callable[[], int], argv: list[str] | None = None) -> int:
    """``client.py WORKLOAD N``: run it, print the outcome as the last line; exit 0, or 1
    with ``{"error": ...}`` when it failed."""
    argv = sys.argv[1:] if argv is None else argv
    workload, n = argv[0], int(argv[1])
    try:
        outcome = run(workload, n, enqueue, is_done, count)
    except WorkloadFailed as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(json.dumps(outcome), flush=True)
    return 0
