"""The pusher: takes messages from the broker into the cluster's task queue.

A thread of the sentinel process. It asks the broker only for as many
messages as the task queue has room for (``queue_limit``), and at least one
per worker per round trip even when ``bulk`` is lower (Django Q's default of 1
would cost a broker round trip per task), verifies and
decodes them (a package that fails verification is failed at the broker and
never reaches a worker), and wakes the sentinel. A broker error is logged and
retried with back-off; the pusher never dies of one.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qhive.errors import BrokerError

if TYPE_CHECKING:
    from qhive.pipeline import Pipeline

logger = logging.getLogger("qhive.cluster")

#: The longest a dequeue blocks: bounds how long a stop waits for the pusher.
DEQUEUE_WAIT = 1.0
MAX_BACKOFF = 30.0


class Queued:
    """A task taken from the broker, waiting for a worker."""

    __slots__ = ("ack_id", "deliveries", "task")

    def __init__(self, task: dict[str, Any], ack_id: str, deliveries: int | None) -> None:
        self.task, self.ack_id, self.deliveries = task, ack_id, deliveries


class Pusher(threading.Thread):
    def __init__(self, pipeline: Pipeline, room: Callable[[], int], wake: Callable[[], None]):
        super().__init__(name="qhive-pusher", daemon=True)
        self.pipeline = pipeline
        self.room = room  # how many more tasks the cluster may hold
        self.wake = wake
        self.queue: collections.deque[Queued] = collections.deque()
        self.stopping = threading.Event()
        self.space = threading.Event()  # set by the sentinel when a worker frees a slot
        self.errors = 0

    def run(self) -> None:
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
                self.errors = 0
            except Exception as exc:  # a dead broker must not kill the pusher
                self._back_off(exc)
                continue
            for message in messages:
                task = self.pipeline.decode(message)
                if task is not None:
                    self.queue.append(Queued(task, message.ack_id, message.deliveries))
            if messages:
                self.wake()

    def _back_off(self, exc: Exception) -> None:
        self.errors += 1
        delay = min(MAX_BACKOFF, 0.5 * 2 ** min(self.errors, 8))
        level = logging.ERROR if self.errors in (1, 5) or self.errors % 20 == 0 else logging.DEBUG
        kind = "broker error" if isinstance(exc, BrokerError) else type(exc).__name__
        logger.log(level, "pusher: %s: %s; retrying in %.1f s", kind, exc, delay)
        self.stopping.wait(delay)
        with contextlib.suppress(Exception):
            self.pipeline.broker.close()  # reconnect on the next call
