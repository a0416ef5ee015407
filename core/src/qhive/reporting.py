"""Task errors to the configured reporters (``error_reporter``), each on its own.

Every entry of ``error_reporter`` is built separately: one whose package is not
installed, or whose options are wrong, is logged in one line naming it and is
left out — the others still report (in Django Q2 one broken reporter silences
them all). Reports are handed to a thread of the process, so a reporter that is
slow, hangs or raises never delays or fails the task; when the process ends, the
thread and each reporter's :meth:`~qhive.contracts.Reporter.flush` get at most
:data:`FLUSH_WAIT` seconds together.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import reprlib
import threading
import time
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from qhive.contracts import Reporter
from qhive.errors import UnknownDriverError
from qhive.hookspecs import hookimpl

if TYPE_CHECKING:
    from qhive.config import Config

logger = logging.getLogger("qhive.reporters")

#: The longest a process waits, as it ends, for its reports to be sent.
FLUSH_WAIT = 2.0
#: Reports waiting for the thread beyond which new ones are dropped (and counted).
BACKLOG = 1000
#: What reporters tell of a task, by name: the task package's key.
TASK_FIELDS = {"task_id": "id", "task_name": "name", "func": "func", "group": "group",
               "attempt": "attempt", "cluster": "cluster"}
#: The module that calls the task function: a task's own frames come after its last one.
TASK_CALLER = "qhive.builtin.hooks"

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 500


def build_reporters(config_items: dict[str, Any], build: Callable[[str, Any], Reporter],
                    *, quiet: bool = False) -> list[Reporter]:
    """The reporters of ``error_reporter`` that could be built; each failure is one
    line (at DEBUG when ``quiet``: a worker, whose sentinel said it already)."""
    reporters = []
    for name, options in config_items.items():
        try:
            reporters.append(build(name, options))
        except Exception as exc:
            missing = isinstance(exc, UnknownDriverError)
            logger.log(logging.DEBUG if quiet else logging.ERROR,
                       "error reporter %r is %s, so task errors are not sent there%s: %s",
                       name, "not installed" if missing else "left out: it could not be built",
                       "; the other reporters still report" if len(config_items) > 1 else "",
                       exc)
    return reporters


class Reporting:
    """Implements ``qhive_report_error`` for a pipeline: queues the error for the
    process's reporting thread, which hands it to every reporter in turn."""

    def __init__(self, reporters: list[Reporter]) -> None:
        self.reporters = reporters
        self.dropped = 0
        self._queue: queue.Queue[tuple[BaseException, Any]] = queue.Queue(BACKLOG)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @hookimpl
    def qhive_report_error(self, error: BaseException, task: dict[str, Any] | None) -> None:
        if not self.reporters:
            return
        self._start()
        try:
            self._queue.put_nowait((error, task))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                logger.error("error reporters are %d reports behind: %d reports dropped "
                             "(a reporter is hanging or its service is slow)", BACKLOG,
                             self.dropped)

    def _start(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:  # a forked child has the queue, not the thread: start its own
            if self._thread is None or self._pid != os.getpid():
                self._queue = queue.Queue(BACKLOG)
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="qhive-reporters",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            error, task = self._queue.get()
            for reporter in self.reporters:
                try:
                    reporter.report(error, task)
                except Exception:  # the contract says never; be safe anyway
                    logger.exception("error reporter %r failed", reporter)
            self._queue.task_done()

    def flush(self, timeout: float = FLUSH_WAIT) -> bool:
        """Wait up to ``timeout`` seconds for queued reports to be handed over and the
        reporters to send them; True when everything went."""
        deadline = time.monotonic() + timeout
        if self._thread is not None and self._pid == os.getpid():
            while self._queue.unfinished_tasks and time.monotonic() < deadline:
                time.sleep(0.01)
        done = self._pid != os.getpid() or not self._queue.unfinished_tasks
        for reporter in self.reporters:
            with contextlib.suppress(Exception):
                done = reporter.flush(max(0.0, deadline - time.monotonic())) is not False and done
        return done


# --------------------------------------------------------------------------- for reporters


def task_fields(task: Any, config: Config | None = None) -> dict[str, str]:
    """The task's id, name, func, group, attempt and cluster that it has, as text, by
    :data:`TASK_FIELDS` name (the cluster is the config's when the task names none).
    Never raises, whatever the task holds."""
    fields = {}
    for name, key in TASK_FIELDS.items():
        value = _get(task, key)
        if value is not None and not (isinstance(value, str) and not value):
            fields[name] = as_text(value)  # (no == on the value: a hostile __eq__ may raise)
    if "cluster" not in fields and (cluster := getattr(config, "cluster_name", None)):
        fields["cluster"] = cluster
    return fields


def as_text(value: Any) -> str:
    """``value`` as text, never raising: a str as it is, a callable by its dotted name,
    anything else a bounded repr."""
    try:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if callable(value) and isinstance(getattr(value, "__qualname__", None), str):
            return f"{getattr(value, '__module__', None) or '?'}.{value.__qualname__}"
        return _repr.repr(value)
    except Exception:
        with contextlib.suppress(Exception):
            return f"<unrepresentable {type(value).__name__}>"
        return "<unrepresentable>"


def first_task_frame(tb: types.TracebackType | None) -> types.TracebackType | None:
    """Where the task's own frames start in ``tb``: after the last frame of
    :data:`TASK_CALLER` (the call itself when the task was called wrongly); all of
    ``tb`` when the task was never called (the error is qhive's or a plugin's)."""
    frames = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    calls = [i for i, f in enumerate(frames)
             if f.tb_frame.f_globals.get("__name__") == TASK_CALLER]
    if not calls:
        return frames[0] if frames else None
    return frames[calls[-1] + 1] if calls[-1] + 1 < len(frames) else frames[calls[-1]]


def _get(task: Any, key: str) -> Any:
    if not isinstance(task, Mapping):
        return None
    try:
        return task.get(key)
    except Exception:
        return None
