"""Task functions for tests: importable by dotted path from any process.

``qhive_testkit.tasks.add`` and friends behave in well-known ways (succeed,
raise, exit, die), so cluster and pipeline tests in every package share them.
"""

import builtins
import json
import os
import sys
import time

from qhive.progress import progress


def add(a, b):
    return a + b


def boom(message="boom"):
    raise ValueError(message)


def leave():
    sys.exit(3)


def interrupt():
    raise KeyboardInterrupt


async def async_add(a, b):
    return a + b


def echo(*args, **kwargs):
    """Its arguments back: ``[args, kwargs]``."""
    return [list(args), kwargs]


def nothing():
    return None


def sleep(seconds, result=None):
    time.sleep(seconds)
    return result


def in_steps(seconds, steps=2):
    """Run ``seconds`` in ``steps`` equal steps, reporting progress at the start of each
    (``0.5 "step 2 of 2"`` halfway through with two steps)."""
    for step in range(steps):
        progress(step / steps, f"step {step + 1} of {steps}")
        time.sleep(seconds / steps)
    return steps


def die():
    """Kill the worker process outright, as a segfault or the OOM killer would."""
    os._exit(13)


def unpicklable():
    return lambda: None


#: Tasks that fail in every way a task can, and the text their failure must show.
FAILURES = {
    "leave": "SystemExit: 3",
    "interrupt": "KeyboardInterrupt",
    "unpicklable": "qhive could not store the result of this task: pickle serializer cannot "
                   "serialize a value of type 'function'",
    "no_such_function": "task function 'qhive_testkit.tasks.no_such_function' does not exist",
    "die": "the worker running this task died (exit code 13)",
}


def record(path, *values, **named):
    """Append one JSON line — ``values``, ``named`` and the time it ran — to the file ``path``.

    Counts executions, not results: a task that ran twice leaves two lines even
    if its result was saved once. One ``write`` on an O_APPEND file, so lines of
    concurrent workers never mix.
    """
    line = json.dumps({"values": list(values), "named": named, "at": time.time(),
                       "pid": os.getpid()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return list(values)


def flaky(path, failures, error="ConnectionError"):
    """Record this attempt (as :func:`record` does, value ``"attempt"``); raise the
    builtin exception named ``error`` on the first ``failures`` attempts; then return
    the attempt's number."""
    record(path, "attempt")
    with open(path) as lines:
        attempt = sum(1 for _ in lines)
    if attempt <= failures:
        raise getattr(builtins, error)(f"attempt {attempt} failed")
    return attempt


def record_slowly(path, seconds, *values):
    """:func:`record` ``values`` as it starts, then take ``seconds``."""
    record(path, *values)
    time.sleep(seconds)
    return list(values)
