"""Worker processes as the sentinel sees them: how one starts, and what its end says.

Workers start from a forkserver that ran the set-up once
(:mod:`qhive.cluster.preload`), or are spawned where there is no forkserver;
never with the main script's path (:func:`main_script_hidden`). What goes over
a worker's pipe is told in :mod:`qhive.cluster.worker`; the sentinel's side of
that conversation (hand-shake, tasks, deaths) is :class:`qhive.cluster.Cluster`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from qhive.cluster.slots import Slot, SlotState
from qhive.cluster.worker import run_worker

if TYPE_CHECKING:
    from qhive.config import Config


@dataclasses.dataclass(eq=False)
class Worker:
    """The sentinel's view of one worker process."""

    process: Any
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


def worker_context(setup: str | None) -> multiprocessing.context.BaseContext:
    """The multiprocessing context workers start from."""
    # forkserver: workers start from a clean single-threaded server, not from the
    # sentinel with its threads and connections (fork would copy held locks). The
    # server runs the set-up once (qhive.cluster.preload); workers are its forks.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    if setup:
        os.environ["QHIVE_WORKER_SETUP"] = setup  # read by the forkserver as it starts
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["qhive.cluster.preload"])
    return context


def spawn_worker(context: multiprocessing.context.BaseContext, memory: Any, index: int,
                 config: Config, setup: str | None, served: Any = None,
                 log: bool = False) -> Worker:
    """Start worker number ``index`` in slot ``index`` of ``memory``; it reports when
    it is ready (or why not)."""
    slot = Slot(memory.buffer, index)
    slot.reset()
    ours, theirs = context.Pipe()
    name = f"qhive-worker-{index}-{uuid.uuid4().hex[:6]}"
    process = context.Process(
        target=run_worker, args=(theirs, memory, index, config, setup, name, served, log),
        name=name, daemon=config.daemonize_workers,
    )
    with main_script_hidden():
        process.start()
    theirs.close()
    return Worker(process, ours, name, slot)


@contextlib.contextmanager
def main_script_hidden() -> Iterator[None]:
    """Start processes without telling them the main script's path.

    multiprocessing re-runs ``__main__``'s file in every child so that objects
    defined there unpickle; a ``manage.py`` without the ``if __name__ ==
    "__main__":`` guard would then run ``qcluster`` again in each worker. Task
    functions never live in the main script, so children do not need it.
    """
    main = sys.modules.get("__main__")
    path = None
    if main is not None and getattr(main, "__spec__", None) is None:
        path = main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path


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
