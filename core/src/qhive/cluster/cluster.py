"""The cluster: a sentinel guarding a pool of worker processes.

The sentinel is the ``qcluster`` process itself; it only supervises. Each
worker takes its own tasks from the broker, runs them, saves their results and
acknowledges them, in batches, on its own connections
(:mod:`qhive.cluster.worker`): no task passes through the sentinel, so it is
no bottleneck. The sentinel enforces timeouts, replaces workers that die,
recycle or time out, and publishes the cluster's stats.

The sentinel still knows which task each worker runs: the worker keeps it in
its slot of shared memory (:mod:`qhive.cluster.slots`). So a worker that is
killed, crashes or times out produces a failure for that task — saved by the
sentinel's monitor thread, counted as an attempt and redelivered or given up
per ``retry``, ``max_attempts`` and ``ack_failures``. Nothing stalls and
nothing is lost silently.

Stop procedure (SIGINT or SIGTERM, to the sentinel or to its whole process
group: workers leave the decision to the sentinel): each worker stops taking
tasks, gives the tasks it took but did not start back to the broker (with
receipts; without, runs them first), finishes its running task, saves every
result and exits. Saving waits at most ``STOP_GRACE`` seconds for a failing
broker or result store: the tasks whose results were not saved are not
acknowledged and come back after ``retry``. A second signal stops at once:
running tasks are killed, and come back after ``retry``.

The process exits non-zero when the cluster stopped because something broke:
a thread of the sentinel died, or workers kept dying as they started.

How a worker process starts, and what its end says: :mod:`qhive.cluster.processes`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import logging
import os
import pickle
import signal
import socket
import threading
import time
import uuid
from multiprocessing.connection import wait
from multiprocessing.heap import Arena
from typing import Any

import psutil

from qhive.cluster.monitor import Monitor
from qhive.cluster.processes import Worker, describe_exit, spawn_worker
from qhive.cluster.served import ServedDrivers
from qhive.cluster.slots import SLOT_BYTES, STRIPPED
from qhive.cluster.stat import IDLE, STARTING, STOPPED, STOPPING, WORKING, Stat, StatStore
from qhive.cluster.worker import EXITING, READY, STOP_GRACE, run_worker
from qhive.cluster.zygote import Zygote, ZygoteGone
from qhive.config import Config
from qhive.errors import SetupError
from qhive.naming import humanize
from qhive.pipeline import Done, Pipeline
from qhive.task import check_package, func_name

logger = logging.getLogger("qhive.cluster")

_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Workers that die before they are ready, in a row, that stop the cluster.
START_FAILURES = 3
#: The longest the sentinel sleeps between looks at the slots: how late a
#: timeout may be noticed.
TICK = 0.25


class Cluster:
    """Runs tasks of ``config.queue`` until stopped.

    :param config: the cluster's config.
    :param setup: dotted path of a no-argument function every worker calls
        first (``"qhive_django.runtime:setup"`` sets Django up).
    """

    def __init__(self, config: Config, *, setup: str | None = None) -> None:
        self.config = config
        self.setup = setup
        self.cluster_id = uuid.uuid4().hex
        self.name = humanize(self.cluster_id)
        self.pid = os.getpid()
        self.pipeline = Pipeline(config)
        self.workers: list[Worker] = []
        self.reincarnations = 0
        self.status = STARTING
        self.exit_code = 0
        self._stop_requests = 0
        self._start_failures = 0
        self._watched: list[tuple[threading.Thread, str]] = []
        self._stat_store: StatStore | None = None  # chosen at the first save
        self._stat_failed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._zygote = Zygote(self._run_worker)
        # Zero pages are only allocated when written: a slot costs what its task uses.
        self._memory = Arena(SLOT_BYTES * config.workers)
        self._served: ServedDrivers | None = None
        self._forced = False
        self._froze = False  # whether run() must give the collector its objects back
        #: What workers that ended had counted (their slots start again from zero).
        self._ended = collections.Counter[str]()
        self._running_cache: dict[int, tuple[int, dict[str, Any]]] = {}
        self._stat = Stat(self.cluster_id, config.cluster_name, socket.gethostname(), self.pid,
                          configured_workers=config.workers, queue_limit=config.queue_limit)
        self.monitor = Monitor(self.pipeline)
        self.started = threading.Event()  # set once workers run (tests, embedding)
        self.stopped = threading.Event()

    # ------------------------------------------------------------------ control
    def run(self) -> int:
        """Start, work until stopped, stop; return the exit code (0 after a clean stop)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)
        try:
            self._start()
            self._loop()
            self._shutdown()
        finally:
            self._zygote.close()
            if self.started.is_set():  # else there is no cluster to report
                self.status = STOPPED
                self._save_stat()
            self.pipeline.close()
            if self._froze:  # a process that embeds the cluster gets its heap back as it was
                gc.unfreeze()
            self.stopped.set()
        return self.exit_code

    def stop(self) -> None:
        """Ask the cluster to stop (graceful the first time, at once the second)."""
        self._stop_requests += 1
        self._wake()

    def watch(self, thread: threading.Thread, name: str) -> None:
        """Stop the cluster, exiting non-zero, if ``thread`` ends before the cluster
        stops — for activities that plugins start (the scheduler)."""
        self._watched.append((thread, name))

    def _fatal(self, message: str) -> None:
        logger.critical("%s; stopping the cluster", message)
        self.exit_code = 1
        if not self._stop_requests:
            self.stop()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        logger.info("Q Cluster %s got %s", self.name, signal.Signals(signum).name)
        self.stop()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already awake (buffer full), or closing
            self._wake_w.send(b"!")

    # ------------------------------------------------------------------ start
    def _start(self) -> None:
        config = self.config
        logger.info("Q Cluster %s starting (queue %r, %d workers, broker %s)", self.name,
                    config.queue, config.workers, config.broker)
        self._check_backends()
        self.pipeline.codec  # noqa: B018 -- fail at start, not at the first task
        self.pipeline.reporting  # noqa: B018 -- a missing reporter is said once, here
        # Workers are forks of the zygote: fork it with no thread running and no
        # connection open, so that they inherit no lock and no socket.
        for driver in (self.pipeline.broker, self.pipeline.result_store):
            driver.close()
        self._log_workers = bool(logging.getLogger("qhive").handlers)
        self._zygote.start()
        # Pages the sentinel shares with the zygote and the workers stay shared only while
        # nobody writes them: a full collection writes the header of every object it scans.
        self._froze = not gc.get_freeze_count()
        gc.freeze()
        self.pipeline.pm.hook.qhive_cluster_starting(cluster=self)
        if not self.pipeline.broker.capabilities.shared:
            self._served = ServedDrivers({"broker": self.pipeline.broker,
                                          "result_store": self.pipeline.result_store})
        for index in range(config.workers):
            self.workers.append(self._spawn(index))
        self._set_affinity()
        self.monitor.start()
        self.status = IDLE
        self.pipeline.pm.hook.qhive_cluster_started(cluster=self)
        self._save_stat()
        self.started.set()
        logger.info("Q Cluster %s running (pid %d)", self.name, self.pid)

    def _check_backends(self) -> None:
        """Talk to the broker and the result store once. One that is not set up
        (:class:`SetupError`: a missing table) stops the start; one that cannot be
        reached is said in one line, then retried as while running."""
        for what, driver in (("broker", self.pipeline.broker),
                             ("result store", self.pipeline.result_store)):
            try:
                driver.ping()
            except SetupError:
                raise
            except Exception as exc:
                logger.error("the %s cannot be reached yet (%s); the cluster starts and "
                             "keeps trying", what, exc)

    def _spawn(self, index: int) -> Worker:
        return spawn_worker(self._zygote, self._memory, index, self._served)

    def _run_worker(self, index: int, name: str, conn: Any, served: Any) -> None:
        """In a fork of the zygote: be worker ``index``."""
        run_worker(conn, self._memory, index, self.config, self.setup, name, served,
                   self._log_workers)

    def _set_affinity(self, workers: list[Worker] | None = None) -> None:
        per_worker = self.config.cpu_affinity
        cpus = os.cpu_count() or 1
        if not per_worker or per_worker >= cpus or self.config.testing:
            return
        for worker in workers or self.workers:
            index = self.workers.index(worker)
            cores = [(index * per_worker + i) % cpus for i in range(per_worker)]
            try:
                psutil.Process(worker.process.pid).cpu_affinity(cores)
            except (psutil.Error, AttributeError) as exc:  # not on macOS
                logger.warning("cannot set cpu affinity of %s: %s", worker.name, exc)
                return

    # ------------------------------------------------------------------ main loop
    def _loop(self) -> None:
        next_stat = 0.0
        while not self._stop_requests:
            self._wait_once()
            now = time.monotonic()
            if now >= next_stat:
                self._guard()
                next_stat = now + self.config.guard_cycle

    def _wait_once(self) -> None:
        now = time.monotonic()
        timeout = min(self.config.guard_cycle, TICK)
        deadlines = [w.state.deadline for w in self.workers if w.busy and w.state.deadline]
        if deadlines:
            timeout = max(0.0, min(timeout, min(deadlines) - now))
        sources: dict[Any, Worker | None] = {self._wake_r: None, self._zygote.sock: None}
        for worker in self.workers:
            sources[worker.conn] = worker
        for ready in wait(list(sources), timeout):
            worker = sources[ready]
            if worker is not None:
                self._receive(worker)
            elif ready is self._wake_r:
                self._drain_wake()
        if not self._zygote.pump() and not self._stop_requests:
            self._fatal("the zygote process that starts workers died")
        for worker in list(self.workers):
            if worker.process.exitcode is not None:
                self._died(worker)
        for worker in self.workers:
            worker.state = worker.slot.read()
        self._check_timeouts()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _receive(self, worker: Worker) -> bool:
        """Take a worker's message; False when there is none (it died)."""
        try:
            kind, value = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):
            worker.process.join(1)  # it died: the zygote tells how, at once
            return False
        if kind == READY:  # its start-up report: ready, or why not
            worker.ready, worker.start_error = value is None, value
            if worker.ready:
                self._start_failures = 0
        elif kind == EXITING:  # it exits on its own, having saved everything
            worker.exiting = value
        return True

    def _died(self, worker: Worker) -> None:
        """A worker's process ended."""
        worker.process.join(1)
        while worker.conn.poll(0) and self._receive(worker):  # what it said last
            pass
        state = worker.state = worker.slot.read()
        for counter in ("processed", "failed", "broker_errors", "store_errors"):
            self._ended[counter] += getattr(state, counter)
        if not worker.ready:
            if self._start_failed(worker):
                return
        elif state.running and not self._forced:
            if worker.timed_out == state.tasks:
                message = (f"Task exceeded maximum timeout value "
                           f"({_seconds(state.timeout)} seconds); its worker was killed")
            elif worker.timed_out is not None:
                message = ("its worker was killed for the timeout of the task it ran before, "
                           "as this one started")
            else:
                message = (f"the worker running this task died "
                           f"({describe_exit(worker.process.exitcode)})")
            self._fail_running(worker, message)
        if worker.exiting:
            why = worker.exiting
        elif worker.timed_out is not None:
            why = "timed out"
        elif self._stop_requests and worker.process.exitcode == 0:
            why = "stopped"
        else:
            why = "died"
        self._replace(worker, why)

    def _start_failed(self, worker: Worker) -> bool:
        """A worker died before it was ready; True when that stops the cluster."""
        self._start_failures += 1
        cause = worker.start_error or describe_exit(worker.process.exitcode)
        if self._start_failures < START_FAILURES:
            logger.error("worker %s died as it started: %s", worker.name, cause)
            return False
        self.workers.remove(worker)
        worker.conn.close()
        self._fatal(f"workers die as they start ({self._start_failures} in a row): {cause}")
        return True

    def _task_in(self, worker: Worker) -> tuple[dict[str, Any], str | None] | None:
        """The task a worker's slot says it runs, and its message's receipt."""
        _count, kind, data, ack_id = worker.slot.task_data()
        try:
            if kind == STRIPPED:  # written by our own worker: not a message from outside
                task = pickle.loads(data)
            else:
                task = check_package(self.pipeline.codec.decode(data))
        except Exception as exc:
            logger.error("cannot read the task of worker %s from its slot: %s", worker.name,
                         exc)
            return None
        task.setdefault("cluster", self.config.cluster_name)
        return task, ack_id

    def _fail_running(self, worker: Worker, message: str) -> None:
        found = self._task_in(worker)
        if found is None:
            return  # unacknowledged: it comes back after 'retry'
        task, ack_id = found
        state = worker.state
        task["run_started"] = state.started
        if state.attempt is not None:
            task["attempt"] = state.attempt
        logger.error("task %s (%s): %s", task.get("name"), task.get("func"), message)
        result = self.pipeline.result_of(task, False, message)
        self.monitor.put(Done(task, result, ack_id, state.attempt))

    def _replace(self, worker: Worker, why: str) -> None:
        index = self.workers.index(worker)
        worker.conn.close()
        self._running_cache.pop(index, None)
        if self._stop_requests:
            self.workers.pop(index)
            logger.log(logging.INFO if why == "stopped" else logging.WARNING,
                       "worker %s %s (exit %s)", worker.name, why, worker.process.exitcode)
            return
        level = logging.INFO if why.startswith("recycled") else logging.WARNING
        logger.log(level, "worker %s %s (exit %s); starting a new one", worker.name, why,
                   worker.process.exitcode)
        self.reincarnations += 1
        try:
            self.workers[index] = self._spawn(index)
        except ZygoteGone as exc:
            self.workers.pop(index)
            self._fatal(f"cannot start a worker: {exc}")
            return
        self._set_affinity([self.workers[index]])

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            state = worker.state
            if (state.running and state.deadline and now >= state.deadline
                    and worker.timed_out is None):
                worker.timed_out = state.tasks
                worker.process.kill()  # its death, seen next round, records the failure

    def _guard(self) -> None:
        for thread, name in ((self.monitor, "monitor"), *self._watched):
            if not thread.is_alive() and not self._stop_requests:
                error = getattr(thread, "error", None)
                self._fatal(f"the {name} thread stopped unexpectedly"
                            + (f" ({type(error).__name__}: {error})" if error else ""))
        self.status = WORKING if any(w.busy for w in self.workers) else IDLE
        self._save_stat()

    # ------------------------------------------------------------------ stop
    def _shutdown(self) -> None:
        self.status = STOPPING
        logger.info("Q Cluster %s stopping", self.name)
        self.pipeline.pm.hook.qhive_cluster_stopping(cluster=self)
        self._save_stat()
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(pickle.dumps(None))
        # Each worker finishes its task, saves its results and exits; deaths and
        # timeouts meanwhile are handled as while running.
        next_stat = time.monotonic() + self.config.guard_cycle
        while self.workers:
            if self._stop_requests > 1 and not self._forced:
                self._forced = True
                for worker in self.workers:
                    if worker.busy:
                        logger.warning("stopping now: task of %s left unacknowledged; it comes "
                                       "back after 'retry'", worker.name)
                    worker.process.kill()
            self._wait_once()
            if time.monotonic() >= next_stat:
                self._save_stat()
                next_stat = time.monotonic() + self.config.guard_cycle
        if self._forced:
            self.monitor.give_up.set()
        self.monitor.finish()
        self.monitor.join(STOP_GRACE)
        if self.monitor.is_alive():  # the store or broker is failing: do not wait for it
            self.monitor.give_up.set()
            self.monitor.join(STOP_GRACE)
        if self.monitor.is_alive():
            logger.error("stopping without waiting for %d results to be saved: their tasks "
                         "were not acknowledged and come back after 'retry' (%s s)",
                         self.monitor.unsaved, self.config.retry)
        stat = self.stat
        logger.info("Q Cluster %s stopped (%d processed, %d failed)", self.name,
                    stat.processed, stat.failed)

    # ------------------------------------------------------------------ stats
    @property
    def stat(self) -> Stat:
        """The cluster now, a new :class:`Stat` each time (plugins read it from other
        threads, the guard saves it)."""
        workers = list(self.workers)
        states = [(w, w.slot.read()) for w in workers]
        counted = self.counters(states)
        return dataclasses.replace(
            self._stat, status=self.status, workers=[w.process.pid for w in workers],
            reincarnations=self.reincarnations, task_q_size=counted["prefetched"],
            done_q_size=counted["unsaved"], busy=sum(s.running for _w, s in states),
            processed=counted["processed"], failed=counted["failed"],
            running=[entry for w, s in states if (entry := self._running(w, s))])

    def counters(self, states: list | None = None) -> collections.Counter[str]:
        """The cluster's totals: ``processed``, ``failed``, ``prefetched`` (taken, not
        started), ``unsaved``, ``broker_errors``, ``store_errors``."""
        if states is None:
            states = [(w, w.slot.read()) for w in list(self.workers)]
        total = collections.Counter(self._ended)
        for _worker, state in states:
            for name in ("processed", "failed", "prefetched", "unsaved", "broker_errors",
                         "store_errors"):
                total[name] += getattr(state, name)
        monitor = self.monitor
        total["processed"] += monitor.processed
        total["failed"] += monitor.failed
        total["unsaved"] += monitor.unsaved
        total["store_errors"] += monitor.outage.totals["result store"]
        total["broker_errors"] += monitor.outage.totals["broker"]
        return total

    def _running(self, worker: Worker, state: Any) -> dict[str, Any] | None:
        if not state.running:
            return None
        index = worker.slot.index
        cached = self._running_cache.get(index)
        if cached is None or cached[0] != state.tasks:
            found = self._task_in(worker)
            if found is None:
                return None
            task = found[0]
            cached = self._running_cache[index] = (state.tasks, {
                "id": task["id"], "name": task.get("name"), "func": func_name(task["func"]),
                "group": task.get("group")})
        return {**cached[1], "worker": worker.process.pid, "started": state.started,
                "attempt": state.attempt, "progress": state.progress,
                "note": worker.slot.note() if state.progress is not None else None}

    def _save_stat(self) -> None:
        # Statistics are never worth stopping for: a failure is logged, as a warning
        # the first time (a missing migration, a wrong cache) and quietly after that.
        try:
            store = self._stat_store
            if store is None:
                store = self._stat_store = Stat.store_for(self.pipeline)
                if store.keeper is None:
                    logger.warning("Q Cluster %s: %s", self.name, store.reason)
                elif store.keeper is not self.pipeline.broker:
                    logger.info("Q Cluster %s keeps its statistics in %s", self.name,
                                store.where)
            store.save(self.stat, ttl=max(3.0, self.config.guard_cycle * 6))
        except Exception as exc:
            log = logger.debug if self._stat_failed else logger.warning
            self._stat_failed = True
            log("Q Cluster %s could not save its statistics (%s: %s)", self.name,
                type(exc).__name__, exc)


def _seconds(value: float | None) -> Any:
    """A timeout as the user wrote it: ``5``, not ``5.0``."""
    return int(value) if value is not None and value == int(value) else value
