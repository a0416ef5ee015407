"""``progress(0.4, "step 2")``: a running task says how far it got.

The report goes to the worker's slot of shared memory, where its sentinel reads
it and publishes it with the running tasks in its stats (see
:mod:`qhive.running`): no message, no broker or store round trip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

#: The longest progress note kept.
NOTE_LIMIT = 200

_sink: Callable[[float, str | None], None] | None = None
_sink_lock = threading.Lock()


def report_to(sink: Callable[[float, str | None], None] | None) -> None:
    """Where :func:`progress` goes in this process (the worker sets its slot)."""
    global _sink
    _sink = sink


def progress(fraction: float, note: str | None = None) -> bool:
    """Report how far the running task got: ``fraction`` from 0 to 1, and an optional
    short ``note`` (``progress(0.4, "step 2 of 5")``).

    Callers see it with the task's state (``status()``), ``qinfo``, ``qmonitor`` and
    the admin's running tasks within a guard cycle. A call costs a few microseconds
    (a write to shared memory). Outside a worker (a
    ``sync`` task, a shell) nobody can watch, and it does nothing.

    :return: True when the report went to the cluster.
    :raises ValueError: when ``fraction`` is not a number from 0 to 1.
    """
    if (isinstance(fraction, bool) or not isinstance(fraction, int | float)
            or not 0 <= fraction <= 1):
        raise ValueError(f"progress() takes a fraction from 0 to 1, got {fraction!r}")
    sink = _sink
    if sink is None:
        return False
    text = None if note is None else str(note)[:NOTE_LIMIT]
    with _sink_lock:  # a task's threads share the worker's pipe
        sink(float(fraction), text)
    return True
