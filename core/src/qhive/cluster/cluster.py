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

Stop procedure (SIGINT or SIGTERM): stop taking tasks; give the tasks taken
but not started back to the broker (with receipts; without, run them first);
let running tasks finish; save every result; stop the workers. A second
signal stops at once: running tasks are then not acknowledged and come back
after ``retry``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import threading
import time
import uuid
from multiprocessing.connection import Connection, wait
from typing import Any

from qhive.cluster.monitor import Monitor
from qhive.cluster.pusher import Pusher, Queued
from qhive.cluster.stat import IDLE, STARTING, STOPPED, STOPPING, WORKING, Stat
from qhive.cluster.worker import run_worker
from qhive.config import Config
from qhive.naming import humanize
from qhive.pipeline import Done, Pipeline

logger = logging.getLogger("qhive.cluster")

_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _mp_context(setup: str | None) -> multiprocessing.context.BaseContext:
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


@dataclasses.dataclass(eq=False)
class Worker:
    """The sentinel's view of one worker process."""

    process: Any
    conn: Connection
    name: str
    job: Queued | None = None
    deadline: float | None = None
    timed_out: bool = False

    @property
    def busy(self) -> bool:
        return self.job is not None


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
        self._stop_requests = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._ctx = _mp_context(setup)
        self._stat = Stat(self.cluster_id, config.cluster_name, socket.gethostname(), self.pid,
                          configured_workers=config.workers, queue_limit=config.queue_limit)
        self.pusher = Pusher(self.pipeline, self._room, self._wake)
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
            self.status = STOPPED
            self._save_stat()
            self.pipeline.close()
            self.stopped.set()
        return 0

    def stop(self) -> None:
        """Ask the cluster to stop (graceful the first time, at once the second)."""
        self._stop_requests += 1
        self._wake()

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
        self.pipeline.broker.ping()
        self.pipeline.result_store  # noqa: B018 -- fail at start, not at the first result
        self.pipeline.codec  # noqa: B018
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

    def _spawn(self, index: int) -> Worker:
        ours, theirs = self._ctx.Pipe()
        name = f"qhive-worker-{index}-{uuid.uuid4().hex[:6]}"
        process = self._ctx.Process(
            target=run_worker, args=(theirs, self.config, self.setup, name), name=name,
            daemon=self.config.daemonize_workers,
        )
        process.start()
        theirs.close()
        return Worker(process, ours, name)

    def _set_affinity(self, workers: list[Worker] | None = None) -> None:
        per_worker = self.config.cpu_affinity
        cpus = os.cpu_count() or 1
        if not per_worker or per_worker >= cpus or self.config.testing:
            return
        import psutil

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
        held = len(self.pusher.queue) + sum(w.busy for w in self.workers)
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
            if worker.busy or not worker.process.is_alive():
                continue
            job = queue.popleft()
            self._give(worker, job)

    def _give(self, worker: Worker, job: Queued) -> None:
        timeout = job.task.get("timeout", self.config.timeout)
        worker.job = job
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
        # An answer may still sit in the pipe (a death right after answering).
        answered = worker.busy and worker.conn.poll(0) and self._receive(worker)
        if answered and worker not in self.workers:  # it was recycling
            return
        if worker.busy:
            code = worker.process.exitcode
            if worker.timed_out:
                message = (f"Task exceeded maximum timeout value "
                           f"({worker.job.task.get('timeout', self.config.timeout)} seconds); "
                           f"its worker was killed")
            else:
                message = f"the worker running this task died ({_describe_exit(code)})"
            self._fail_job(worker, message)
        self._replace(worker, "timed out" if worker.timed_out else "died")

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
        for thread, name in ((self.pusher, "pusher"), (self.monitor, "monitor")):
            if not thread.is_alive() and not self._stop_requests:
                logger.critical("the %s thread stopped unexpectedly; stopping the cluster", name)
                self.stop()
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
            while queue:  # taken, never started: back to the broker for anyone to take
                self._release(queue.popleft())
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
        self.monitor.join()
        self.workers.clear()
        logger.info("Q Cluster %s stopped (%d processed, %d failed)", self.name,
                    self.monitor.processed, self.monitor.failed)

    def _release(self, job: Queued) -> None:
        try:
            self.pipeline.broker.release(job.ack_id)
        except Exception as exc:
            logger.warning("could not release task %s (%s); it comes back after 'retry'",
                           job.task.get("name"), exc)

    # ------------------------------------------------------------------ stats
    @property
    def stat(self) -> Stat:
        stat = self._stat
        stat.status = self.status
        stat.workers = [w.process.pid for w in self.workers]
        stat.reincarnations = self.reincarnations
        stat.task_q_size = len(self.pusher.queue)
        stat.done_q_size = self.monitor.results.qsize()
        stat.busy = sum(w.busy for w in self.workers)
        stat.processed = self.monitor.processed
        stat.failed = self.monitor.failed
        return stat

    def _save_stat(self) -> None:
        broker = self.pipeline.broker
        if not broker.capabilities.stats:
            return
        try:
            self.stat.save(broker, self.config.name, ttl=max(3.0, self.config.guard_cycle * 6))
        except Exception as exc:  # statistics are never worth stopping for
            logger.debug("could not save cluster statistics: %s", exc)


def configure_logging(config: Config) -> None:
    """Show the cluster's log on stderr at ``log_level``, as Django Q does, unless the
    project configured the ``qhive`` logger itself."""
    root = logging.getLogger("qhive")
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s [Q] %(levelname)s %(message)s",
                                           "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(config.log_level)
    root.propagate = False


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
