"""The pusher: takes messages from the broker into the cluster's task queue.

A thread of the sentinel process, with a broker connection of its own. It asks
the broker only for as many messages as the cluster has room for
(``queue_limit``, counting tasks waiting, running and whose results are not yet
saved), and at least one per worker per round trip even when ``bulk`` is lower
(Django Q's default of 1 would cost a broker round trip per task). It verifies
and decodes them: a package that fails verification or is not a task is failed
at the broker and never reaches a worker. A broker error is logged and retried
with a short back-off, and the first success after errors says so once; the
pusher never dies of one.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qhive.cluster.outage import Outage

if TYPE_CHECKING:
    from qhive.pipeline import Pipeline

logger = logging.getLogger("qhive.cluster")

#: The longest a dequeue blocks: bounds how long a stop waits for the pusher.
DEQUEUE_WAIT = 1.0
class Queued:
    """A task taken from the broker, waiting for a worker."""

    __slots__ = ("ack_id", "deliveries", "task")

    def __init__(self, task: dict[str, Any], ack_id: str, deliveries: int | None) -> None:
        self.task, self.ack_id, self.deliveries = task, ack_id, deliveries


class Pusher(threading.Thread):
    def __init__(self, pipeline: Pipeline, room: Callable[[], int], wake: Callable[[], None]):
        super().__init__(name="qhive-pusher", daemon=True)
        self.pipeline = pipeline  # the cluster gives the pusher drivers of its own
        self.room = room  # how many more tasks the cluster may hold
        self.wake = wake
        self.queue: collections.deque[Queued] = collections.deque()
        self.stopping = threading.Event()
        self.space = threading.Event()  # set by the sentinel when a slot frees up
        self.outage = Outage("broker")
        self.error: BaseException | None = None  # why the thread died, if it did

    def run(self) -> None:
        try:
            self.pipeline = self.pipeline.for_thread()
            self._run()
        except BaseException as exc:
            self.error = exc
            logger.critical("the pusher thread died", exc_info=True)
            self.wake()
        finally:
            if self.pipeline.owner is not None:  # close only this thread's copy
                with contextlib.suppress(Exception):
                    self.pipeline.close()

    def _run(self) -> None:
        broker = self.pipeline.broker
        config = self.pipeline.config
        bulk = max(config.bulk, config.workers)
        while not self.stopping.is_set():
            room = self.room()
            if room <= 0:
                self.space.wait(DEQUEUE_WAIT)
                self.space.clear()
                continue
            try:
                messages = broker.dequeue(count=min(room, bulk), timeout=DEQUEUE_WAIT)
                self.outage.recovered()
            except Exception as exc:  # a dead broker must not kill the pusher
                self._back_off(exc)
                continue
            for message in messages:
                try:
                    task = self.pipeline.decode(message)
                except Exception as exc:  # failing a bad package needs the broker too
                    logger.error("could not reject message %s (%s); it comes back after "
                                 "'retry'", message.ack_id, exc)
                    continue
                if task is not None:
                    self.queue.append(Queued(task, message.ack_id, message.deliveries))
            if messages:
                self.wake()

    def _back_off(self, exc: Exception) -> None:
        delay = self.outage.failed(exc, "pusher")
        with contextlib.suppress(Exception):
            self.pipeline.broker.close()  # this thread's own connection: reopened next call
        self.stopping.wait(delay)
