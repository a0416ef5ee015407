"""The monitor: saves the failures the sentinel records for tasks whose worker
died or timed out, and settles their messages (workers save their own results).

A thread of the sentinel process, with connections of its own. It takes
whatever results are waiting, saves them with one ``save_many`` call, runs the
success / failure hooks and acknowledges the messages. ``post_execute``
(Django's signal, and the task's own ``hook``) runs on a separate thread, so a
slow hook never holds up saving.

If the result store fails, the results are kept and retried with a short
back-off: a message is only acknowledged after its result was saved, so nothing
is lost. Meanwhile, where the broker can, the receipts of the held tasks are
renewed so that no other cluster runs them again. A stop gives up on a failing
store after a bound: those tasks come back after ``retry``.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING

from qhive.cluster.outage import Outage
from qhive.cluster.worker import hold, log_result
from qhive.errors import BrokerError

if TYPE_CHECKING:
    from qhive.pipeline import Done, Pipeline

logger = logging.getLogger("qhive.cluster")

BATCH = 200
#: How long the hook thread may take to finish its queue when the cluster stops.
HOOKS_STOP_WAIT = 10.0


class Monitor(threading.Thread):
    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__(name="qhive-monitor", daemon=True)
        self.pipeline = pipeline  # the cluster gives the monitor drivers of its own
        self.results: queue.Queue[Done | None] = queue.Queue()
        self.hooks = _HookRunner(pipeline)
        self.processed = 0
        self.failed = 0
        self.unsaved = 0  # results handed over and not yet saved: they count as held
        self._lock = threading.Lock()
        self.outage = Outage("result store")
        self.give_up = threading.Event()  # a stop's bound has passed: stop retrying
        self.error: BaseException | None = None  # why the thread died, if it did
        self._failed: Exception | None = None  # the last error of the store or broker

    def put(self, done: Done) -> None:
        with self._lock:
            self.unsaved += 1
        self.results.put(done)

    def finish(self) -> None:
        """Save what is queued, then stop."""
        self.results.put(None)

    def run(self) -> None:
        try:
            self.pipeline = self.pipeline.for_thread()
            self.hooks.start()
            self._run()
            self.hooks.finish()
            self.hooks.join(HOOKS_STOP_WAIT)
            if self.hooks.is_alive():
                logger.warning("stopping without waiting for post_execute hooks still running")
        except BaseException as exc:
            self.error = exc
            logger.critical("the monitor thread died", exc_info=True)
        finally:
            if self.pipeline.owner is not None:  # close only this thread's copy
                self.pipeline.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self.results.get()]
            stopping = self._take_waiting(batch)
            if batch and not self._settle(batch):
                stopping = self._hold_until_saved(batch) or stopping

    def _take_waiting(self, batch: list[Done | None], limit: int = BATCH) -> bool:
        """Add results waiting in the queue to ``batch``; True once ``finish`` was asked."""
        while len(batch) < limit:
            try:
                batch.append(self.results.get_nowait())
            except queue.Empty:
                break
        finished = None in batch
        batch[:] = [d for d in batch if d is not None]
        return finished

    def _settle(self, batch: list[Done]) -> bool:
        """Save and settle ``batch``; False if the store or broker failed."""
        try:
            stored = self.pipeline.settle(batch)
        except Exception as exc:
            self._failed = exc
            self.outage.what = "broker" if isinstance(exc, BrokerError) else "result store"
            return False
        self.outage.recovered()
        with self._lock:
            self.unsaved -= len(batch)
        for done, result in zip(batch, stored, strict=True):
            self.processed += 1
            self.failed += not result.success
            log_result(result)
            self.hooks.put((done.task, result))
        return True

    def _hold_until_saved(self, batch: list[Done]) -> bool:
        """Retry ``batch`` (with every result arriving meanwhile) until it is saved or
        a stop gives up; return True if ``finish`` was asked meanwhile."""
        finished = False
        while True:
            delay = self.outage.failed(
                self._failed, f"monitor: saving or acknowledging {len(batch)} results failed "
                              f"({self.unsaved} tasks held)")
            hold(self.pipeline, batch)
            # Again well before the renewed receipts run out.
            if self.give_up.wait(min(delay, self.pipeline.config.retry / 3)):
                logger.error("stopping without saving %d results: their tasks were not "
                             "acknowledged and come back after 'retry' (%s s)", len(batch),
                             self.pipeline.config.retry)
                with self._lock:
                    self.unsaved -= len(batch)
                return finished
            finished = self._take_waiting(batch, limit=len(batch) + BATCH) or finished
            if self._settle(batch):
                return finished


class _HookRunner(threading.Thread):
    """Runs ``qhive_post_execute`` one result at a time, off the saving path."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__(name="qhive-hooks", daemon=True)
        self.pipeline = pipeline
        self.items: queue.Queue = queue.Queue()

    def put(self, item: tuple) -> None:
        self.items.put(item)

    def finish(self) -> None:
        self.items.put(None)

    def run(self) -> None:
        hook = self.pipeline.pm.hook.qhive_post_execute
        while (item := self.items.get()) is not None:
            task, result = item
            try:
                hook(task=task, result=result)
            except Exception:
                logger.exception("post_execute hook failed for task %s", result.id)
