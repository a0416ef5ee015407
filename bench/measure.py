"""Processes the harness starts, and what it measures of them.

* :class:`Worker` — the cluster / worker pool of a system, in its own session, its output
  in a log file; stopped with SIGTERM, and its whole process tree with SIGKILL 30 s later.
* :class:`Client` — one workload run; its stdout read line by line with the time each line
  arrived (``ready`` lines, and the JSON outcome on the last line).
* :class:`TreeSampler` — a thread that samples the memory of a process tree, summed over
  its processes: RSS every 50 ms, PSS every 0.5 s (the tree itself is walked every 0.5 s);
  and reads the tree's CPU time on demand.

CPU of a tree that loses processes (Django Q2 recycles its workers every 500 tasks): a
process's own CPU time is counted while it lives; when it exits and its parent reaps it,
the kernel adds its CPU time (and that of its own reaped children) to the parent's
"children" times. So ``sum(user + system + children_user + children_system)`` over the
live processes of the tree never loses CPU time, as long as the root is alive when it is
read — which is why :meth:`TreeSampler.cpu` is read before the worker is stopped.

Every process started here is registered in :data:`STARTED` and :func:`stop_all` ends
whatever is left, by pid, also after Ctrl-C or a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

SAMPLE_EVERY = 0.05  # s between two RSS samples (/proc/PID/statm: cheap)
PSS_EVERY = 0.5  # s between two PSS samples (smaps_rollup: ~1 ms per Django-sized process)
TREE_EVERY = 0.5  # s between two walks of the process tree (a walk reads all of /proc)
STOP_GRACE = 30.0  # s between SIGTERM and SIGKILL
STARTED: dict[int, subprocess.Popen] = {}  # pid -> process, everything still to be ended
_TREES: dict[int, set[int]] = {}  # root pid -> every pid seen in its tree (for the last kill)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu(procs: list[psutil.Process]) -> float:
    """Seconds of CPU of these processes and of the children they reaped."""
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


class TreeSampler(threading.Thread):
    """Samples the memory of the trees of ``roots`` (RSS every 50 ms, PSS every 0.5 s);
    their CPU on demand.

    ``peaks[phase]`` holds ``(rss, pss)`` maxima in bytes for each phase label set with
    :meth:`phase` (the sample total is the sum over every process of the tree).
    """

    def __init__(self, roots: list[int], memory: bool = True) -> None:
        super().__init__(name="tree-sampler", daemon=True)
        self.roots = [psutil.Process(pid) for pid in roots]
        self.memory = memory
        self.current = "start"
        self.peaks: dict[str, list[int]] = {}
        self.last: tuple[int, int] = (0, 0)
        self.samples = 0
        self.seen: set[int] = set(roots)
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def phase(self, name: str) -> None:
        with self._lock:
            self.current = name

    def procs(self) -> list[psutil.Process]:
        found = []
        for root in self.roots:
            found += tree(root)
        return found

    def cpu(self) -> float:
        """CPU seconds used so far by the trees (read it while the roots are alive)."""
        return tree_cpu(self.procs())

    def sample(self, procs: list[psutil.Process] | None = None, pss: bool = True) -> None:
        """One memory sample of ``procs`` (default: walk the tree now): RSS, and PSS too
        when ``pss``."""
        if procs is None:
            procs = self.procs()
            self.seen.update(p.pid for p in procs)
        if not self.memory:
            return
        rss_sum = pss_sum = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                if pss:
                    info = proc.memory_full_info()
                    rss_sum += info.rss
                    pss_sum += info.pss
                else:
                    rss_sum += proc.memory_info().rss
        with self._lock:
            peak = self.peaks.setdefault(self.current, [0, 0])
            peak[0] = max(peak[0], rss_sum)
            if pss:
                peak[1] = max(peak[1], pss_sum)
            self.last = (rss_sum, pss_sum if pss else self.last[1])
            self.samples += 1

    def run(self) -> None:
        # The tree is walked every 0.5 s and PSS read every 0.5 s, RSS every 50 ms: a walk
        # scans every process of the machine and a PSS read costs ~1 ms per process, and
        # doing both every 50 ms would cost the harness ~15 % of a core, taken from the
        # systems it measures (the more processes a system has, the more).
        procs: list[psutil.Process] = []
        next_walk = next_pss = 0.0
        while not self._halt.is_set():
            now = time.monotonic()
            if now >= next_walk:
                procs = self.procs()
                self.seen.update(p.pid for p in procs)
                next_walk = now + TREE_EVERY
            pss = now >= next_pss
            if pss:
                next_pss = now + PSS_EVERY
            self.sample(procs, pss)
            self._halt.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class Worker:
    """A system's worker command, running until :meth:`stop`."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(argv, cwd=cwd, env=_env(env), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        STARTED[self.proc.pid] = self.proc
        self.sampler = TreeSampler([self.proc.pid])
        _TREES[self.proc.pid] = self.sampler.seen
        self.sampler.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> dict:
        """SIGTERM, wait up to 30 s, then SIGKILL the tree. Returns how it went."""
        self.sampler.stop()
        self.sampler.seen.update(p.pid for p in self.sampler.procs())
        t0 = time.perf_counter()
        code = _end(self.proc, self.sampler.seen)
        return {"stop_seconds": time.perf_counter() - t0, "exit_code": code,
                "killed": code is None or code == -signal.SIGKILL}


class Client:
    """One client run: lines of stdout with their arrival times; the last one is JSON."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.lines: list[tuple[float, str]] = []
        self.log_path = log_path
        self._changed = threading.Condition()
        self._log = log_path.open("ab")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=_env(env), stdout=subprocess.PIPE,
                                     stderr=self._log, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        STARTED[self.proc.pid] = self.proc
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            now = time.perf_counter()
            self._log.write(raw)
            with self._changed:
                self.lines.append((now, line))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_line(self, text: str, timeout: float) -> float | None:
        """Arrival time of the first stdout line equal to ``text``; None if it does not come
        within ``timeout`` or the client ends first."""
        deadline = time.perf_counter() + timeout
        with self._changed:
            while True:
                for at, line in self.lines:
                    if line.strip() == text:
                        return at
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return None
                self._changed.wait(min(remaining, 0.1))

    def result(self, timeout: float) -> tuple[dict, float]:
        """Wait for the client to end; ``(its JSON outcome, when that line arrived)``."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _end(self.proc, set(), grace=2)
            raise RunFailed(f"client timed out after {timeout:.0f} s "
                            f"(log: {self.log_path})") from None
        finally:
            self._reader.join(5)
            STARTED.pop(self.proc.pid, None)
            self._log.close()
        lines = [(at, line) for at, line in self.lines if line.strip()]
        if not lines:
            raise RunFailed(f"client printed nothing, exit {self.proc.returncode} "
                            f"(log: {self.log_path})")
        at, last = lines[-1]
        try:
            outcome = json.loads(last)
        except ValueError:
            raise RunFailed(f"client's last line is not JSON: {last[:200]!r} "
                            f"(log: {self.log_path})") from None
        if not isinstance(outcome, dict) or "error" in outcome or self.proc.returncode:
            raise RunFailed(f"client failed (exit {self.proc.returncode}): "
                            f"{str(outcome)[:300]} (log: {self.log_path})")
        return outcome, at


class RunFailed(Exception):
    """One run went wrong; the message says how (the harness records it and goes on)."""


def _end(proc: subprocess.Popen, seen: set[int], grace: float = STOP_GRACE) -> int | None:
    """SIGTERM ``proc``; after ``grace`` s SIGKILL it and every process seen in its tree."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    code = None
    try:
        code = proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = proc.wait(5)
    _kill_leftovers(proc.pid, seen)
    STARTED.pop(proc.pid, None)
    _TREES.pop(proc.pid, None)
    return code


def _kill_leftovers(root: int, seen: set[int]) -> None:
    """SIGKILL processes of a stopped tree that outlived its root: those seen in the tree,
    and any other process still in the session the root led (``start_new_session``: the
    session id is the root's pid, so this finds orphans adopted by init too)."""
    for pid in seen | set(psutil.pids()):
        if pid == root or pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getsid(pid) == root:
                os.kill(pid, signal.SIGKILL)


def stop_all() -> None:
    """End every process this module started and that is still running (Ctrl-C, failure)."""
    for proc in list(STARTED.values()):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid, proc in list(STARTED.items()):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        _kill_leftovers(pid, _TREES.pop(pid, set()))
        STARTED.pop(pid, None)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation, as numpy's default."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)
