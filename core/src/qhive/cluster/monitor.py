"""The monitor: saves results in batches and settles their messages.

A thread of the sentinel process. It takes whatever results are waiting,
saves them with one ``save_many`` call, runs the success / failure hooks and
acknowledges the messages. ``post_execute`` (Django's signal, and the task's
own ``hook``) runs on a separate thread, so a slow hook never holds up saving.

If the result store fails, the batch is kept and retried with back-off: a
message is only acknowledged after its result was saved, so nothing is lost —
at worst a task runs again after ``retry``.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qhive.pipeline import Done, Pipeline

logger = logging.getLogger("qhive.cluster")

BATCH = 200
MAX_BACKOFF = 30.0


class Monitor(threading.Thread):
    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__(name="qhive-monitor", daemon=True)
        self.pipeline = pipeline
        self.results: queue.Queue[Done | None] = queue.Queue()
        self.hooks = _HookRunner(pipeline)
        self.processed = 0
        self.failed = 0
        self.give_up = threading.Event()  # a forced stop: stop retrying a failing store

    def put(self, done: Done) -> None:
        self.results.put(done)

    def finish(self) -> None:
        """Save what is queued, then stop."""
        self.results.put(None)

    def run(self) -> None:
        self.hooks.start()
        stopping = False
        while not stopping:
            batch = [self.results.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self.results.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is None:
                stopping = True
                batch.pop()
            if batch:
                self._settle(batch)
        self.hooks.finish()
        self.hooks.join()

    def _settle(self, batch: list[Done]) -> None:
        errors = 0
        while True:
            try:
                stored = self.pipeline.settle(batch)
                break
            except Exception as exc:
                errors += 1
                delay = min(MAX_BACKOFF, 0.5 * 2**errors)
                if self.give_up.is_set():
                    logger.error(
                        "monitor: could not save %d results (%s); their tasks were not "
                        "acknowledged and will run again after 'retry'", len(batch), exc)
                    return
                logger.error("monitor: saving %d results failed: %s; retrying in %.1f s",
                             len(batch), exc, delay)
                self._reconnect()
                self.give_up.wait(delay)
        for done, result in zip(batch, stored, strict=True):
            self.processed += 1
            if not result.success:
                self.failed += 1
                logger.error("Failed '%s' (%s) - %s", result.func, result.name,
                             _last_line(result.result))
            else:
                logger.info("Processed '%s' (%s)", result.func, result.name)
            self.hooks.put((done.task, result))


    def _reconnect(self) -> None:
        """Drop the store's and broker's connections: the next call opens new ones."""
        for driver in (self.pipeline.result_store, self.pipeline.broker):
            try:
                driver.close()
            except Exception as exc:
                logger.debug("closing %r failed: %s", driver, exc)


def _last_line(text: object) -> str:
    lines = str(text).strip().splitlines()
    return lines[-1] if lines else ""


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
