"""The worker process: takes its own tasks from the broker, runs them, saves their
results and acknowledges their messages, in batches, on its own connections.

Nothing goes through the sentinel per task. What the sentinel needs to
supervise — the running task, its deadline, progress, counters — the worker
writes into its slot of shared memory (:mod:`qhive.cluster.slots`); if the
worker dies or is killed for a timeout, the sentinel saves the task's failure
from there.

A batch is as many messages as the tasks take about :data:`BATCH_SECONDS` to
run, at most ``queue_limit / workers`` (default 50; 100 when unbounded) and at
least ``bulk``: one message at a time for slow tasks (a long task never holds
others back), many for quick ones (one broker round trip, one save and one
acknowledgement for many tasks).
Tasks taken but not started for :data:`RELEASE_AFTER` seconds go back to the
broker, for another worker to take. Results are saved once the batch ran, or
after :data:`SAVE_AFTER` seconds for a batch still running.

If the result store fails, the worker keeps its results, renews their
receipts, and retries; it takes no new task until they are saved. A message is
only acknowledged after its result was saved, so nothing is lost.

Pipe protocol with the sentinel: once set up, the worker reports ``(READY,
None)`` — or ``(READY, error)`` and exits if its set-up failed. Before it exits
on its own (``recycle`` tasks ran, or its memory passed ``max_rss``) it sends
``(EXITING, reason)``. The sentinel sends ``None`` to ask it to stop: it finishes
the running task, gives back those not started (or runs them, on a broker
without receipts), saves every result and exits.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import pickle
import signal
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import psutil

from qhive.cluster.logs import configure_logging
from qhive.cluster.outage import Outage
from qhive.cluster.slots import Slot
from qhive.errors import BrokerError
from qhive.pipeline import Done
from qhive.progress import report_to
from qhive.result_packages import storable
from qhive.task import resolve_func

if TYPE_CHECKING:
    from qhive.config import Config
    from qhive.contracts import Message
    from qhive.pipeline import Pipeline

logger = logging.getLogger("qhive.cluster")

_PROTOCOL = pickle.HIGHEST_PROTOCOL
READY, EXITING = "ready", "exiting"
#: The longest a dequeue blocks: bounds how long a stop waits for an idle worker.
DEQUEUE_WAIT = 1.0
#: A batch is sized to run in about this long.
BATCH_SECONDS = 0.05
#: Results of a batch still running are saved after this long.
SAVE_AFTER = 0.05
#: Tasks taken and not started after this long go back to the broker.
RELEASE_AFTER = 1.0
#: The most messages taken at once when ``queue_limit`` does not say.
MAX_BATCH = 100
#: While stopping, the longest wait for a failing result store or broker.
STOP_GRACE = 10.0


def rss_kb() -> int:
    """Current resident memory of this process in KB (not the peak, unlike ru_maxrss)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:  # no /proc: not Linux
        return psutil.Process().memory_info().rss // 1024


def run_worker(conn: Connection, memory: Any, index: int, config: Config, setup: str | None,
               name: str, served: Any = None, log: bool = False) -> None:
    """The worker process's main function.

    :param memory: the cluster's slots; this worker writes slot ``index``.
    :param served: drivers the sentinel serves (an in-process broker), or None.
    :param log: log like ``qcluster`` does (:func:`qhive.cluster.configure_logging`).
    """
    # Ctrl-C and SIGTERM reach the whole process group (a terminal, systemd,
    # Kubernetes, ``kill -- -PGID``); the sentinel decides what stops when, and
    # running tasks finish. The sentinel stops a worker over the pipe or with SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        if setup:
            resolve_func(setup)()
        if log:  # after setup: the project's own logging config wins
            configure_logging(config)

        from qhive.pipeline import Pipeline  # after setup: plugins may need the framework

        pipeline = Pipeline(config)
        if served is not None:
            pipeline.__dict__.update(served.connect())
        pipeline.load_reporters(quiet=True)  # a missing one: the sentinel said so
        pipeline.pm.hook.qhive_worker_spawned(name=name)
    except BaseException as exc:  # the sentinel says why in one line, and stops retrying
        conn.send_bytes(pickle.dumps((READY, f"{type(exc).__name__}: {exc}"), _PROTOCOL))
        raise
    slot = Slot(memory.buffer, index)
    conn.send_bytes(pickle.dumps((READY, None), _PROTOCOL))
    report_to(slot.progress)
    try:
        reason = TaskLoop(conn, slot, pipeline).run()
        if reason:
            with contextlib.suppress(OSError):
                conn.send_bytes(pickle.dumps((EXITING, reason), _PROTOCOL))
    finally:
        report_to(None)
        pipeline.close()  # sends what the error reporters hold, within a bound


class TaskLoop:
    """Take, run, save, acknowledge — until stopped, recycled or too big."""

    def __init__(self, conn: Connection, slot: Slot, pipeline: Pipeline) -> None:
        self.conn, self.slot, self.pipeline = conn, slot, pipeline
        config = self.config = pipeline.config
        self.receipts = pipeline.broker.capabilities.receipts
        limit = config.queue_limit
        self.max_batch = max(config.bulk, (limit // config.workers) if limit else MAX_BATCH, 1)
        self.batch = max(1, min(config.bulk, self.max_batch))
        self.stopping = False
        self.stop_deadline = 0.0
        self.ran = 0
        self.processed = self.failed = 0  # results saved
        self.pending: list[Done] = []
        self.pending_since = 0.0
        self.broker_outage = Outage("broker")
        self.store_outage = Outage("result store")

    # -- control
    def _stop_asked(self, wait: float = 0.0) -> bool:
        """True once the sentinel asked to stop or is gone; waits up to ``wait`` s."""
        if self.stopping:
            if wait:
                time.sleep(wait)
            return True
        try:
            if not self.conn.poll(wait):
                return False
            self.conn.recv_bytes()  # None: the only message the sentinel sends
        except (EOFError, OSError):
            pass  # the sentinel is gone: finish like a stop
        self.stopping = True
        self.stop_deadline = time.monotonic() + STOP_GRACE
        return True

    def _exit_reason(self) -> str | None:
        config = self.config
        if config.recycle and self.ran >= config.recycle:
            return "recycled"
        if config.max_rss and rss_kb() >= config.max_rss:
            return "recycled (max_rss)"
        return None

    def run(self) -> str | None:
        while not self._stop_asked():
            messages = self._take()
            if messages:
                self._run_batch(messages)
            if reason := self._exit_reason():
                return reason
        return None

    def _errors(self) -> dict[str, int]:
        """The slot's error counters: taking fails at the broker; saving at the store
        or, as it acknowledges, at the broker."""
        store = self.store_outage.totals
        return {"broker_errors": self.broker_outage.totals["broker"] + store["broker"],
                "store_errors": store["result store"]}

    # -- taking
    def _take(self) -> list[Message]:
        count = self.batch
        if self.config.recycle:  # never more than it may still run
            count = max(1, min(count, self.config.recycle - self.ran))
        try:
            messages = self.pipeline.broker.dequeue(count=count, timeout=DEQUEUE_WAIT)
        except Exception as exc:  # a dead broker must not kill the worker
            delay = self.broker_outage.failed(exc, "taking tasks")
            self.slot.count(**self._errors())
            with contextlib.suppress(Exception):
                self.pipeline.broker.close()  # reopened by the next call
            self._stop_asked(delay)
            return []
        self.broker_outage.recovered()
        return messages

    def _run_batch(self, messages: list[Message]) -> None:
        queue = collections.deque(messages)
        taken = time.monotonic()
        slot = self.slot
        while queue:
            slot.count(prefetched=len(queue) - 1, unsaved=len(self.pending))
            if self.receipts and queue and (
                    self._stop_asked() or time.monotonic() - taken > RELEASE_AFTER):
                self._release(queue)
                break
            message = queue.popleft()
            try:
                task = self.pipeline.decode(message)
            except Exception as exc:  # failing a bad package needs the broker too
                logger.error("could not reject message %s (%s); it comes back after "
                             "'retry'", message.ack_id, exc)
                continue
            if task is not None:
                self._run(task, message)
                if self.receipts and self.config.max_rss and rss_kb() >= self.config.max_rss:
                    self._release(queue)  # it is replaced after this task, as in Django Q
            if self.pending and time.monotonic() - self.pending_since >= SAVE_AFTER:
                self._save()
        self._save()
        self._size_batch(len(messages), time.monotonic() - taken)

    def _size_batch(self, count: int, seconds: float) -> None:
        """The next batch: what runs in about BATCH_SECONDS, growing at most twofold."""
        per_task = seconds / max(count, 1)
        fits = int(BATCH_SECONDS / per_task) if per_task > 0 else self.max_batch
        self.batch = max(1, self.config.bulk, min(fits, self.batch * 2, self.max_batch))

    def _release(self, queue: collections.deque[Message]) -> None:
        """Give messages taken but not started back, for any worker to take."""
        while queue:
            try:
                self.pipeline.broker.release(queue[0].ack_id)
            except Exception as exc:
                logger.warning("could not give back %d tasks taken but not started (%s); "
                               "they come back after 'retry' (%s s)", len(queue), exc,
                               self.config.retry)
                queue.clear()
                return
            queue.popleft()

    # -- running
    def _run(self, task: dict[str, Any], message: Message) -> None:
        timeout = task.get("timeout", self.config.timeout)
        # For the running list, the hooks and the error reporters.
        task["run_started"] = time.time()
        if message.deliveries is not None:
            task["attempt"] = message.deliveries
        self.slot.begin(message.payload, lambda: _without_arguments(task), message.ack_id,
                        message.deliveries, timeout)
        result, error = self.pipeline.execute(task)
        self.slot.end()
        self.ran += 1
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append(Done(task, result, message.ack_id, message.deliveries, error))

    # -- saving
    def _save(self) -> None:
        """Save and settle the pending results; until it works, or a stop gives up."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        while True:
            try:
                stored = self.pipeline.settle(batch)
                break
            except Exception as exc:
                if _replace_unserializable(self.pipeline, batch):
                    continue
                if not self._hold(batch, exc):
                    return
        if self.store_outage.errors:
            self.store_outage.recovered()
        self.processed += len(stored)
        self.failed += sum(not r.success for r in stored)
        self.slot.count(unsaved=0, processed=self.processed, failed=self.failed)
        hook = self.pipeline.pm.hook.qhive_post_execute
        for done, result in zip(batch, stored, strict=True):
            log_result(result)
            try:
                hook(task=done.task, result=result)
            except Exception:
                logger.exception("post_execute hook failed for task %s", result.id)

    def _hold(self, batch: list[Done], exc: Exception) -> bool:
        """Wait before saving ``batch`` again; False when a stop gives up on it."""
        outage = self.store_outage
        outage.what = "broker" if isinstance(exc, BrokerError) else "result store"
        delay = outage.failed(exc, f"saving or acknowledging {len(batch)} results failed (no "
                                   f"new tasks are taken until they are saved)")
        self.slot.count(unsaved=len(batch), **self._errors())
        hold(self.pipeline, batch)
        self._stop_asked(min(delay, self.config.retry / 3))
        if self.stopping and time.monotonic() >= self.stop_deadline:
            logger.error("stopping without saving %d results: their tasks were not "
                         "acknowledged and come back after 'retry' (%s s)", len(batch),
                         self.config.retry)
            return False
        return True


def _without_arguments(task: dict[str, Any]) -> bytes:
    """The task pickled without its arguments (for a payload too big for a slot)."""
    return pickle.dumps({k: v for k, v in task.items() if k not in ("args", "kwargs")},
                        _PROTOCOL)


def _replace_unserializable(pipeline: Pipeline, batch: list[Done]) -> bool:
    """Make the results the serializer cannot take storable (a failure saying why, for
    a store that raises instead): the task's error, not an outage. True if any was."""
    replaced = False
    for done in batch:
        result = storable(pipeline.codec, done.result)
        replaced = replaced or result is not done.result
        done.result = result
    return replaced


def log_result(result: Any) -> None:
    """The log line of a saved result (the sentinel's monitor logs its own alike)."""
    if result.success:
        logger.info("Processed '%s' (%s)", result.func, result.name)
    else:
        lines = str(result.result).strip().splitlines()
        logger.error("Failed '%s' (%s) - %s", result.func, result.name,
                     lines[-1] if lines else "")


def hold(pipeline: Pipeline, batch: list[Done]) -> None:
    """After saving ``batch`` failed: renew its receipts, so that nobody else runs its
    tasks meanwhile, and drop this pipeline's connections (the next call opens new ones)."""
    broker = pipeline.broker
    if broker.capabilities.touch:
        try:
            broker.touch([d.ack_id for d in batch if d.ack_id is not None])
        except Exception as exc:  # the broker may be down too: its receipts then wait
            logger.debug("could not renew the receipts of held tasks: %s", exc)
    for driver in (pipeline.result_store, broker):
        try:
            driver.close()
        except Exception as exc:
            logger.debug("closing %r failed: %s", driver, exc)
