"""The zygote: a fork of the sentinel, made before the sentinel starts any thread,
that forks the workers.

Workers are forks of a process that has already imported Django, the task
modules' frameworks and the plugins, so every worker — and every replacement of
a recycled or dead one — starts without importing anything again, and shares
that memory with the sentinel and each other (one copy per cluster). The
sentinel cannot fork them itself once its threads run (the monitor, the
scheduler, plugins' servers): a fork copies locks other threads may hold. The
zygote has one thread, opens no connection, and only forks.

The sentinel asks over a ``SOCK_SEQPACKET`` socket pair: ``(index, name, environ,
extra)`` with the worker's end of its pipe passed as a file descriptor; the zygote
answers the new pid, and reports every worker's exit status as it reaps it —
the sentinel's view of its workers' ends. When the sentinel goes away, the
zygote exits; its workers see their pipe close and stop.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

_BUFFER = 1 << 20
_PROTOCOL = pickle.HIGHEST_PROTOCOL


class ZygoteGone(RuntimeError):
    """The zygote died: no worker can be started any more."""


class Zygote:
    """:param target: ``target(index, name, conn, extra)`` runs a worker, in the child."""

    def __init__(self, target: Callable[[int, str, Connection, Any], None]) -> None:
        self._target = target
        self.exits: dict[int, int] = {}  # pid -> exit code, as reaped
        self.pid = 0
        self.sock: socket.socket | None = None
        self._started: int | None = None  # the pid of the last spawn, once answered

    def start(self) -> None:
        """Fork the zygote: call while this process runs no other thread."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the zygote
            ours.close()
            code = 0
            try:
                _serve(theirs, self._target)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self.sock, self.pid = ours, pid

    def fileno(self) -> int:
        return self.sock.fileno()

    def spawn(self, index: int, name: str, extra: Any = None) -> tuple[ForkedProcess, Connection]:
        """Start worker ``index``: its process and the sentinel's end of its pipe."""
        mine, theirs = socket.socketpair()
        request = pickle.dumps((index, name, dict(os.environ), extra), _PROTOCOL)
        try:
            socket.send_fds(self.sock, [request], [theirs.fileno()])
        except OSError as exc:
            raise ZygoteGone(f"the zygote is gone ({exc})") from exc
        finally:
            theirs.close()
        self._started = None
        while self._started is None:
            self._read()
        return ForkedProcess(self, self._started, name), Connection(mine.detach())

    def _read(self) -> None:
        """One message from the zygote (blocking)."""
        data = self.sock.recv(_BUFFER)
        if not data:
            raise ZygoteGone("the zygote exited")
        message = pickle.loads(data)
        if message[0] == "pid":
            self._started = message[1]
        else:  # ("exit", pid, code)
            self.exits[message[1]] = message[2]

    def pump(self, timeout: float = 0.0) -> bool:
        """Read what the zygote said, waiting up to ``timeout`` for a first message;
        False when it is gone."""
        try:
            while wait([self.sock], timeout):
                self._read()
                timeout = 0.0
        except (ZygoteGone, OSError):
            return False
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()  # the zygote sees it and exits
            with contextlib.suppress(ChildProcessError):
                for _ in range(50):
                    if os.waitpid(self.pid, os.WNOHANG)[0]:
                        break
                    time.sleep(0.02)


class ForkedProcess:
    """A worker forked by the zygote, as much of :class:`multiprocessing.Process` as the
    sentinel uses."""

    def __init__(self, zygote: Zygote, pid: int, name: str) -> None:
        self.zygote, self.pid, self.name = zygote, pid, name

    @property
    def exitcode(self) -> int | None:
        return self.zygote.exits.get(self.pid)

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.exitcode is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            if not self.zygote.pump(1.0 if remaining is None else min(remaining, 1.0)):
                return

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def _serve(sock: socket.socket, target: Callable[[int, str, Connection, Any], None]) -> None:
    """The zygote's loop: fork workers on request, report their exits."""
    # Ctrl-C and SIGTERM reach the process group: the sentinel decides; the zygote goes
    # when the sentinel's end of the socket closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    from qhive.plugins import reset_plugin_manager  # only the zygote needs it

    reset_plugin_manager()  # each worker builds its own, with its own drivers
    gc.freeze()  # what exists now stays shared: the collector never writes to it
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                data, fds, _flags, _address = socket.recv_fds(sock, _BUFFER, 1)
                if not data:
                    return  # the sentinel is gone
                index, name, environ, extra = pickle.loads(data)
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    sock.close()
                    signal.set_wakeup_fd(-1)
                    os.close(wake_r)
                    os.close(wake_w)
                    _run_child(target, index, name, fds[0], environ, extra)
                for fd in fds:
                    os.close(fd)
                sock.send(pickle.dumps(("pid", pid), _PROTOCOL))
            else:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                _reap(sock)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        sock.send(pickle.dumps(("exit", pid, os.waitstatus_to_exitcode(status)), _PROTOCOL))


def _run_child(target: Callable[[int, str, Connection, Any], None], index: int, name: str,
               fd: int, environ: dict[str, str], extra: Any) -> None:
    """A new worker: run ``target`` and exit with its status (never returns)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(environ)  # what the sentinel set since the zygote's fork
    code = 0
    try:
        target(index, name, Connection(fd), extra)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
