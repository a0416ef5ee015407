"""Worker processes as the sentinel sees them: how one starts, and what its end says.

Workers are forks of the zygote (:mod:`qhive.cluster.zygote`), never started
with the main script's path. What goes over a worker's pipe is told in
:mod:`qhive.cluster.worker`; the sentinel's side of that conversation (hand-shake,
deaths) is :class:`qhive.cluster.Cluster`.
"""

from __future__ import annotations

import dataclasses
import signal
import uuid
from multiprocessing.connection import Connection
from typing import Any

from qhive.cluster.slots import Slot, SlotState
from qhive.cluster.zygote import ForkedProcess, Zygote


@dataclasses.dataclass(eq=False)
class Worker:
    """The sentinel's view of one worker process."""

    process: ForkedProcess
    conn: Connection
    name: str
    slot: Slot
    ready: bool = False  # set up and taking tasks
    start_error: str | None = None  # why its set-up failed, as it reported
    exiting: str | None = None  # why it exits on its own (recycled), as it said
    timed_out: int | None = None  # the slot's task counter when killed for a timeout
    state: SlotState | None = None  # its slot, as last read by the sentinel

    @property
    def busy(self) -> bool:
        return self.state is not None and self.state.running


def spawn_worker(zygote: Zygote, memory: Any, index: int, served: Any = None) -> Worker:
    """Start worker number ``index`` in slot ``index`` of ``memory``; it reports when
    it is ready (or why not)."""
    slot = Slot(memory.buffer, index)
    slot.reset()
    name = f"qhive-worker-{index}-{uuid.uuid4().hex[:6]}"
    process, conn = zygote.spawn(index, name, served)
    return Worker(process, conn, name, slot)


def describe_exit(code: int | None) -> str:
    """How a process ended, for a log line: ``exit code 1``, ``killed by SIGKILL``."""
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
