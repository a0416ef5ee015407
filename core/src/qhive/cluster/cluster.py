"""The cluster: a sentinel guarding a pool of worker processes.

The sentinel is the ``qcluster`` process itself. Its main thread hands tasks
to idle workers, collects their results, enforces timeouts and replaces
workers that die, recycle or time out. Two threads feed it: the pusher (broker
→ task queue) and the monitor (results → result store → acknowledgements).

The sentinel always knows which task each worker is running, so a worker
that is killed, crashes or times out produces a failure for that task — which
is saved, counted as an attempt and redelivered or given up per ``retry``,
``max_attempts`` and ``ack_failures``. Nothing stalls and nothing is lost
silently.

Stop procedure (SIGINT or SIGTERM, to the sentinel or to its whole process
group: workers leave the decision to the sentinel): stop taking tasks; give the
tasks taken but not started back to the broker (with receipts; without, run
them first); let running tasks finish; save every result; stop the workers.
Saving waits at most ``STOP_GRACE`` seconds for a failing broker or result
store: the tasks whose results were not saved are not acknowledged and come
back after ``retry``. A second signal stops at once, with the same outcome for
running tasks.

The process exits non-zero when the cluster stopped because something broke:
a thread of the sentinel died, or workers kept dying as they started.

How a worker process starts, and what its end says: :mod:`qhive.cluster.processes`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import pickle
import signal
import socket
import threading
import time
import uuid
from multiprocessing.connection import wait
from typing import Any

import psutil

from qhive.cluster.monitor import Monitor
from qhive.cluster.processes import Worker, describe_exit, spawn_worker, worker_context
from qhive.cluster.pusher import Pusher, Queued
from qhive.cluster.stat import IDLE, STARTING, STOPPED, STOPPING, WORKING, Stat, StatStore
from qhive.cluster.worker import PROGRESS
from qhive.config import Config
from qhive.errors import SetupError
from qhive.naming import humanize
from qhive.pipeline import Done, Pipeline
from qhive.task import func_name

logger = logging.getLogger("qhive.cluster")

_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Workers that die before they are ready, in a row, that stop the cluster.
START_FAILURES = 3
#: While stopping, the longest wait for a failing broker or result store.
STOP_GRACE = 10.0


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
        self._ctx = worker_context(setup)
        self._stat = Stat(self.cluster_id, config.cluster_name, socket.gethostname(), self.pid,
                          configured_workers=config.workers, queue_limit=config.queue_limit)
        self.pusher = Pusher(self.pipeline, self._room, self._wake)
        self.monitor = Monitor(self.pipeline, saved=self.pusher.space.set)
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
            if self.started.is_set():  # else there is no cluster to report
                self.status = STOPPED
                self._save_stat()
            self.pipeline.close()
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
        for index in range(config.workers):
            self.workers.append(self._spawn(index))
        self._set_affinity()
        self.monitor.start()
        self.pusher.start()
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
        return spawn_worker(self._ctx, index, self.config, self.setup)

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
    def _room(self) -> int:
        """How many more tasks the pusher may take (``queue_limit`` minus held ones)."""
        # Results not yet saved count too: a failing store stops the intake.
        held = (len(self.pusher.queue) + sum(w.busy for w in self.workers)
                + self.monitor.held())
        limit = self.config.queue_limit
        if self._stop_requests:
            return 0
        return (limit - held) if limit else max(self.config.workers * 2 - held, 0)

    def _loop(self) -> None:
        next_stat = 0.0
        while not self._stop_requests:
            self._dispatch()
            self._wait_once()
            now = time.monotonic()
            if now >= next_stat:
                self._guard()
                next_stat = now + self.config.guard_cycle

    def _dispatch(self) -> None:
        queue = self.pusher.queue
        for worker in self.workers:
            if not queue:
                return
            if worker.busy or not worker.ready or not worker.process.is_alive():
                continue
            job = queue.popleft()
            self._give(worker, job)

    def _give(self, worker: Worker, job: Queued) -> None:
        timeout = job.task.get("timeout", self.config.timeout)
        # For the running list, the hooks and the error reporters.
        job.task["run_started"] = time.time()
        if job.deliveries is not None:
            job.task["attempt"] = job.deliveries
        worker.job, worker.progress = job, None
        worker.deadline = time.monotonic() + timeout if timeout else None
        with contextlib.suppress(OSError):  # a dead worker: its death settles the job
            worker.conn.send_bytes(pickle.dumps(job.task, _PROTOCOL))

    def _wait_once(self) -> None:
        now = time.monotonic()
        timeout = self.config.guard_cycle
        deadlines = [w.deadline for w in self.workers if w.deadline is not None]
        if deadlines:
            timeout = max(0.0, min(timeout, min(deadlines) - now))
        sources: dict[Any, Worker | None] = {self._wake_r: None}
        for worker in self.workers:
            sources[worker.conn] = worker
            sources[worker.process.sentinel] = worker
        for ready in wait(list(sources), timeout):
            worker = sources[ready]
            if worker is None:
                self._drain_wake()
            elif ready is worker.conn:
                self._receive(worker)
            elif worker in self.workers:
                self._died(worker)
        self._check_timeouts()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _receive(self, worker: Worker) -> bool:
        """Take a worker's answer; False when there is none (it died)."""
        try:
            result, exiting = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):
            return False  # it died: the process sentinel tells the rest
        if result == PROGRESS:  # progress of its task: (fraction, note)
            worker.progress = exiting
            return True
        if result is None:  # its start-up report: ready, or why not
            worker.ready, worker.start_error = exiting is None, exiting
            if worker.ready:
                self._start_failures = 0
            return True
        job, worker.job, worker.deadline = worker.job, None, None
        self.pusher.space.set()
        if job is not None:
            self.monitor.put(Done(job.task, result, job.ack_id, job.deliveries))
        if exiting:
            worker.process.join(5)
            self._replace(worker, "recycled")
        return True

    def _died(self, worker: Worker) -> None:
        """A worker's process ended without being asked to."""
        worker.process.join(1)
        # An answer may still sit in the pipe (a death right after answering),
        # behind progress reports.
        answered = False
        while worker.busy and worker.conn.poll(0) and self._receive(worker):
            answered = not worker.busy
        if answered and worker not in self.workers:  # it was recycling
            return
        if not worker.ready:
            if worker.conn.poll(0):  # its start-up error, if it sent one
                self._receive(worker)
            if self._start_failed(worker):
                return
        elif worker.busy:
            code = worker.process.exitcode
            if worker.timed_out:
                message = (f"Task exceeded maximum timeout value "
                           f"({worker.job.task.get('timeout', self.config.timeout)} seconds); "
                           f"its worker was killed")
            else:
                message = f"the worker running this task died ({describe_exit(code)})"
            self._fail_job(worker, message)
        self._replace(worker, "timed out" if worker.timed_out else "died")

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

    def _fail_job(self, worker: Worker, message: str) -> None:
        job = worker.job
        worker.job, worker.deadline = None, None
        self.pusher.space.set()
        logger.error("task %s (%s): %s", job.task.get("name"), job.task.get("func"), message)
        result = self.pipeline.result_of(job.task, False, message)
        self.monitor.put(Done(job.task, result, job.ack_id, job.deliveries))

    def _replace(self, worker: Worker, why: str) -> None:
        index = self.workers.index(worker)
        worker.conn.close()
        self.reincarnations += 1
        level = logging.INFO if why == "recycled" else logging.WARNING
        logger.log(level, "worker %s %s (exit %s); starting a new one", worker.name, why,
                   worker.process.exitcode)
        if self._stop_requests:
            self.workers.pop(index)
            return
        self.workers[index] = self._spawn(index)
        self._set_affinity([self.workers[index]])

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.deadline is not None and now >= worker.deadline and not worker.timed_out:
                worker.timed_out = True
                worker.process.kill()  # its death, seen next round, records the failure

    def _guard(self) -> None:
        for thread, name in ((self.pusher, "pusher"), (self.monitor, "monitor"), *self._watched):
            if not thread.is_alive() and not self._stop_requests:
                error = getattr(thread, "error", None)
                self._fatal(f"the {name} thread stopped unexpectedly"
                            + (f" ({type(error).__name__}: {error})" if error else ""))
        self.status = WORKING if any(w.busy for w in self.workers) or self.pusher.queue else IDLE
        self._save_stat()

    # ------------------------------------------------------------------ stop
    def _shutdown(self) -> None:
        self.status = STOPPING
        logger.info("Q Cluster %s stopping", self.name)
        self.pipeline.pm.hook.qhive_cluster_stopping(cluster=self)
        self.pusher.stopping.set()
        self.pusher.space.set()
        self.pusher.join(5)
        self._save_stat()
        queue = self.pusher.queue
        receipts = self.pipeline.broker.capabilities.receipts
        if receipts:
            self._release_all(queue)
        forced = False
        next_stat = time.monotonic() + self.config.guard_cycle
        while any(w.busy for w in self.workers) or (queue and not receipts):
            if self._stop_requests > 1:
                forced = True
                break
            self._dispatch()
            self._wait_once()
            if time.monotonic() >= next_stat:
                self._save_stat()
                next_stat = time.monotonic() + self.config.guard_cycle
        for worker in self.workers:
            if forced and worker.busy:
                logger.warning("stopping now: task %s left unacknowledged; it comes back "
                               "after 'retry'", worker.job.task.get("name"))
                worker.process.kill()
            else:
                with contextlib.suppress(OSError):
                    worker.conn.send_bytes(pickle.dumps(None))
        for worker in self.workers:
            worker.process.join(10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1)
            worker.conn.close()
        if forced:
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
        self.workers.clear()
        logger.info("Q Cluster %s stopped (%d processed, %d failed)", self.name,
                    self.monitor.processed, self.monitor.failed)

    def _release_all(self, queue: collections.deque[Queued]) -> None:
        """Give the tasks taken but never started back to the broker, for anyone to
        take; after the first failure, leave the rest to come back after ``retry``."""
        while queue:
            try:
                self.pipeline.broker.release(queue[0].ack_id)
            except Exception as exc:
                logger.warning("could not give back %d tasks taken but not started (%s); they "
                               "come back after 'retry' (%s s)", len(queue), exc,
                               self.config.retry)
                queue.clear()
                return
            queue.popleft()

    # ------------------------------------------------------------------ stats
    @property
    def stat(self) -> Stat:
        """The cluster now, a new :class:`Stat` each time (plugins read it from other
        threads, the guard saves it)."""
        workers = list(self.workers)
        return dataclasses.replace(
            self._stat, status=self.status, workers=[w.process.pid for w in workers],
            reincarnations=self.reincarnations, task_q_size=len(self.pusher.queue),
            done_q_size=self.monitor.results.qsize(), busy=sum(w.busy for w in workers),
            processed=self.monitor.processed, failed=self.monitor.failed,
            running=[entry for w in workers if (entry := self._running(w))])

    @staticmethod
    def _running(worker: Worker) -> dict[str, Any] | None:
        job, progress = worker.job, worker.progress  # once: other threads read stats too
        if job is None:
            return None
        task = job.task
        fraction, note = progress or (None, None)
        return {"id": task["id"], "name": task.get("name"), "func": func_name(task["func"]),
                "group": task.get("group"), "worker": worker.process.pid,
                "started": task.get("run_started"),
                "attempt": task.get("attempt"),
                "progress": fraction, "note": note}

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
