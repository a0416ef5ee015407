"""The worker process: runs one task at a time, sent by the sentinel over a pipe.

Protocol: once set up, the worker reports ``(None, None)`` — or ``(None, error)``
and exits if its set-up failed. Then one message each way per task: the
sentinel sends the pickled task dict; the worker answers with the pickled
``(TaskResult, exiting)``, after any number of ``(PROGRESS, (fraction, note))``
that the task sent with :func:`qhive.progress.progress`. ``None`` asks the worker
to exit. A worker exits on its own after ``recycle`` tasks or when its memory
passes ``max_rss`` — after answering, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

import psutil

from qhive.progress import report_to
from qhive.task import resolve_func

if TYPE_CHECKING:
    from qhive.config import Config
    from qhive.pipeline import Pipeline

_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: First item of a progress report ``(PROGRESS, (fraction, note))`` (see qhive.progress).
PROGRESS = "progress"


def rss_kb() -> int:
    """Current resident memory of this process in KB (not the peak, unlike ru_maxrss)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:  # no /proc: not Linux
        return psutil.Process().memory_info().rss // 1024


def run_worker(conn: Connection, config: Config, setup: str | None, name: str) -> None:
    # Ctrl-C and SIGTERM reach the whole process group (a terminal, systemd,
    # Kubernetes, ``kill -- -PGID``); the sentinel decides what stops when, and
    # running tasks finish. The sentinel stops a worker over the pipe or with SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        if setup:
            resolve_func(setup)()

        from qhive.pipeline import Pipeline  # after setup: plugins may need the framework

        pipeline = Pipeline(config)
        pipeline.load_reporters(quiet=True)  # a missing one: the sentinel said so
        pipeline.pm.hook.qhive_worker_spawned(name=name)
    except BaseException as exc:  # the sentinel says why in one line, and stops retrying
        conn.send_bytes(pickle.dumps((None, f"{type(exc).__name__}: {exc}"), _PROTOCOL))
        raise
    conn.send_bytes(pickle.dumps((None, None), _PROTOCOL))
    report_to(lambda fraction, note: _send_progress(conn, fraction, note))
    try:
        _serve(conn, config, pipeline)
    finally:
        pipeline.close()  # sends what the error reporters hold, within a bound


def _send_progress(conn: Connection, fraction: float, note: str | None) -> None:
    with contextlib.suppress(OSError):  # the sentinel is gone: it is no task's failure
        conn.send_bytes(pickle.dumps((PROGRESS, (fraction, note)), _PROTOCOL))


def _serve(conn: Connection, config: Config, pipeline: Pipeline) -> None:
    ran = 0
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # the sentinel is gone
            return
        task = pickle.loads(data)
        if task is None:
            return
        result, _error = pipeline.execute(task)
        ran += 1
        exiting = bool(config.recycle and ran >= config.recycle) or bool(
            config.max_rss and rss_kb() >= config.max_rss
        )
        try:
            reply = pickle.dumps((result, exiting), _PROTOCOL)
        except Exception as exc:  # an unpicklable return value must not stall the cluster
            value = result.result
            result = pipeline.result_of(
                task, False,
                f"the task returned a value that cannot be pickled "
                f"({type(value).__qualname__}): {type(exc).__name__}: {exc}",
            )
            reply = pickle.dumps((result, exiting), _PROTOCOL)
        conn.send_bytes(reply)
        if exiting:
            return
