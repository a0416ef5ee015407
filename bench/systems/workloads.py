"""The workload loops every benchmark client runs — standard library only.

A client sets its system up, then calls :func:`main` with three functions:

* ``enqueue(i) -> handle``: queue ``add(i, i)`` and return what ``is_done`` needs (its id);
* ``is_done(handle) -> bool``: one look at the result store for that task's result;
* ``count() -> int``: the number of results in the result store, in one query.

Round trips poll ``is_done`` every 5 ms, unless the client passes ``wait_done(handle) ->
bool``: the system's own wait, woken when the result is saved (qhive's ``result(wait=)``
on a store that notifies: Redis, PostgreSQL). Polling peers are polled at 5 ms, as fast
as or faster than their own blocking waits poll.

The task is ``add(i, i)`` unless ``$BENCH_TASK`` names another (the scaling curves of
``bench/run.py``): :func:`task_call` gives the name and arguments of the i-th task, and a
client's ``enqueue`` sends the task of that name. Every system defines the same three:

* ``add(a, b) -> a + b`` — a CPU no-op;
* ``sleep_ms(ms) -> ms`` — ``time.sleep(ms / 1000)``: I/O-bound (``BENCH_TASK=sleep_ms:10``);
* ``size(data) -> len(data)`` — ``data`` a str of ``BENCH_TASK=size:BYTES`` ASCII characters.

A client may also pass ``exact() -> int``: an exact count of the results, slow allowed. It
is for a ``count`` that is derived (e.g. from a key count): the drain and results loops
then check, outside the timed part, that the results ``count`` saw are really there, and
fail the run if not.

``python client.py WORKLOAD N`` then prints one JSON line (the last line of stdout).
The loops poll at fixed intervals, the same for every system, so the client's own
polling costs the same everywhere: a single result every 5 ms, the count every 50 ms.
See ``bench/systems/base.py`` for what each workload returns.
"""

from __future__ import annotations

import functools
import json
import os
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


def task_call(i: int) -> tuple[str, tuple]:
    """``(task name, arguments)`` of the i-th task, from ``$BENCH_TASK``: ``add`` (the
    default) -> ``add(i, i)``; ``sleep_ms:MS`` -> ``sleep_ms(MS)``; ``size:BYTES`` ->
    ``size("x" * BYTES)`` (the string is built once)."""
    return _task_call()(i)


@functools.cache
def _task_call() -> Callable[[int], tuple[str, tuple]]:
    name, _, value = os.environ.get("BENCH_TASK", "add").partition(":")
    if name == "add":
        return lambda i: ("add", (i, i))
    if name == "sleep_ms":
        sleep_args = (int(value or 10),)
        return lambda i: ("sleep_ms", sleep_args)
    if name == "size":
        size_args = ("x" * int(value),)
        return lambda i: ("size", size_args)
    raise WorkloadFailed(f"unknown BENCH_TASK {name!r} (add, sleep_ms:MS or size:BYTES)")


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


def round_trip(enqueue: Callable[[int], Any], is_done: Callable[[Any], bool], i: int,
               wait_done: Callable[[Any], bool] | None = None) -> float:
    t0 = time.perf_counter()
    handle = enqueue(i)
    if wait_done is not None:  # the system's own wait, woken by a notification
        if not wait_done(handle):
            raise WorkloadFailed(f"no result for task {handle!r} after {ROUND_TRIP_TIMEOUT:.0f} s")
        return (time.perf_counter() - t0) * 1000
    deadline = t0 + ROUND_TRIP_TIMEOUT
    while not is_done(handle):
        if time.perf_counter() > deadline:
            raise WorkloadFailed(f"no result for task {handle!r} after {ROUND_TRIP_TIMEOUT:.0f} s")
        time.sleep(ROUND_TRIP_POLL)
    return (time.perf_counter() - t0) * 1000


def check_exact(exact: Callable[[], int] | None, before: int, n: int, seen: int) -> None:
    """After the timed part: the results ``count`` said were there (``seen``) must be."""
    if exact is None:
        return
    found = exact() - before
    if found < n:
        raise WorkloadFailed(f"count() said {seen} results, but only {found} of the {n} "
                             "expected are in the store: the count over-counts (has the "
                             "result store's layout changed?)")


def run(workload: str, n: int, enqueue: Callable[[int], Any], is_done: Callable[[Any], bool],
        count: Callable[[], int], exact: Callable[[], int] | None = None,
        wait_done: Callable[[Any], bool] | None = None) -> dict[str, Any]:
    """Run one workload and return its JSON-able outcome."""
    drain_timeout = 60 + n * 0.1  # generous (>= 10 tasks/s): a slow system is reported
    if workload in ("enqueue", "fill"):
        t0 = time.perf_counter()
        for i in range(n):
            enqueue(i)
        return {"seconds": time.perf_counter() - t0}
    if workload == "drain":
        base = count()
        exact_base = exact() if exact else 0
        t0 = time.perf_counter()
        for i in range(n):
            enqueue(i)
        te = time.perf_counter() - t0
        wait_count(count, base + n, drain_timeout)
        outcome = {"seconds": time.perf_counter() - t0, "enqueue_seconds": te}
        check_exact(exact, exact_base, n, base + n)
        return outcome
    if workload == "results":
        print("ready", flush=True)
        t0 = time.perf_counter()
        first: dict[str, float] = {}

        def on_first(done: int) -> None:
            first.update(t=time.perf_counter(), count=done)

        wait_count(count, n, drain_timeout, on_first)
        t1 = time.perf_counter()
        check_exact(exact, 0, n, n)
        return {"seconds": t1 - t0, "steady_seconds": t1 - first["t"],
                "first_count": first["count"]}
    if workload == "latency":
        return {"latencies_ms": [round_trip(enqueue, is_done, i, wait_done) for i in range(n)]}
    if workload == "idle_latency":
        # One round trip first, not timed: a fresh client's first one also pays for its
        # connections and lazy imports (12-37 ms measured), which is not what idle costs.
        round_trip(enqueue, is_done, IDLE_ROUNDS, wait_done)
        latencies = []
        for i in range(IDLE_ROUNDS):
            time.sleep(IDLE_SLEEP + random.uniform(0, IDLE_JITTER))
            latencies.append(round_trip(enqueue, is_done, i, wait_done))
        return {"latencies_ms": latencies}
    raise WorkloadFailed(f"unknown workload {workload!r}")


def main(enqueue: Callable[[int], Any], is_done: Callable[[Any], bool],
         count: Callable[[], int], argv: list[str] | None = None,
         exact: Callable[[], int] | None = None,
         wait_done: Callable[[Any], bool] | None = None) -> int:
    """``client.py WORKLOAD N``: run it, print the outcome as the last line; exit 0, or 1
    with ``{"error": ...}`` when it failed."""
    argv = sys.argv[1:] if argv is None else argv
    workload, n = argv[0], int(argv[1])
    try:
        outcome = run(workload, n, enqueue, is_done, count, exact, wait_done)
    except WorkloadFailed as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(json.dumps(outcome), flush=True)
    return 0
