"""The demo's task functions, run by the cluster's workers."""

import sys
import time


def collatz_steps(n: int) -> int:
    """Steps of the Collatz sequence from ``n`` down to 1: light, pure computation."""
    steps = 0
    while n != 1:
        n = 3 * n + 1 if n % 2 else n // 2
        steps += 1
    return steps


def fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def slow_square(n: int) -> int:
    """A task that takes a while (50 ms), like one waiting on I/O."""
    time.sleep(0.05)
    return n * n


def heartbeat(slot: str) -> str:
    """Run by a schedule: ``slot`` is the time it was due (``intended_date_kwarg``)."""
    return slot


def always_fails(n: int) -> None:
    raise ValueError(f"demo failure #{n}: this task fails on purpose")


def report(task) -> None:
    """A ``hook``: called in the cluster with the saved ``Task`` row; prints what it got."""
    outcome = "returned" if task.success else "failed:"
    result = task.result if task.success else str(task.result).strip().splitlines()[-1]
    call = f"{task.func.rsplit('.', 1)[-1]}({', '.join(map(repr, task.args))})"
    sys.stdout.write(f"hook got {task.name}: {call} {outcome} {result}\n")  # one write: one line
    sys.stdout.flush()
