"""The broker's queue size, read on demand by one thread of the sentinel.

The HTTP server answers each scrape on a new thread; a broker driver used from each
of them would open a connection per scrape (Django's database connections are per
thread) and never close it. So one thread, with a driver copy of its own
(``pipeline.for_thread()``), does every read and closes its copy when the cluster
stops; a scrape asks it and waits for the answer. A value is kept for ``ttl``
seconds, so that scrapes from several Prometheus servers cost the broker one call.
A failing or slow broker never fails a scrape: the queue size is left out of it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qhive.pipeline import Pipeline

logger = logging.getLogger("qhive.metrics.prometheus")


class QueueSizeProbe(threading.Thread):
    """:param pipeline: the cluster's pipeline (a copy of its drivers is made on this thread).
    :param ttl: seconds a value is served again without asking the broker.
    :param wait: the longest a scrape waits for the broker."""

    def __init__(self, pipeline: Pipeline, ttl: float = 1.0, wait: float = 5.0) -> None:
        super().__init__(name="qhive-metrics-queue-size", daemon=True)
        self.pipeline = pipeline
        self.ttl, self.wait = ttl, wait
        self._cond = threading.Condition()
        self._wanted = self._stopping = False
        self._value: int | None = None
        self._read_at = -math.inf  # time.monotonic() of the last read, failed or not
        self._reads = 0  # bumped after each read: what a waiting scrape watches
        self._failing = False

    def size(self) -> int | None:
        """The number of messages waiting in the broker; None if it cannot tell now."""
        with self._cond:
            if time.monotonic() - self._read_at < self.ttl:
                return self._value
            if self._stopping or not self.is_alive():
                return None
            reads = self._reads
            self._wanted = True
            self._cond.notify_all()
            done = self._cond.wait_for(lambda: self._reads != reads or self._stopping,
                                       timeout=self.wait)
            return self._value if done and self._reads != reads else None

    def stop(self, wait: float = 2.0) -> None:
        """End the thread (it closes its drivers); a broker call under way is not waited
        for longer than ``wait`` seconds: the thread is a daemon."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self.is_alive():
            self.join(wait)

    def run(self) -> None:
        try:
            pipeline = self.pipeline.for_thread()
        except Exception as exc:
            logger.error("Prometheus metrics: cannot make a broker connection for the queue "
                         "size (%s: %s); qhive_queue_size is left out", type(exc).__name__, exc)
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            return
        try:
            while self._next():
                self._read(pipeline)
        finally:
            try:
                pipeline.close()
            except Exception as exc:  # the cluster is stopping: say it, go on
                logger.debug("Prometheus metrics: closing the queue size connection: %s", exc)

    def _next(self) -> bool:
        """Wait until a scrape wants a value (True) or the cluster stops (False)."""
        with self._cond:
            self._cond.wait_for(lambda: self._wanted or self._stopping)
            self._wanted = False
            return not self._stopping

    def _read(self, pipeline: Pipeline) -> None:
        value: int | None = None
        try:
            value = int(pipeline.broker.queue_size())
        except Exception as exc:
            # Not worth more than one warning per outage: the cluster logs broker errors.
            log = logger.debug if self._failing else logger.warning
            log("Prometheus metrics: the broker's queue size cannot be read (%s: %s); "
                "qhive_queue_size is left out until it can", type(exc).__name__, exc)
            self._failing = True
            with contextlib.suppress(Exception):  # a new connection at the next read
                pipeline.broker.close()
        else:
            if self._failing:
                logger.info("Prometheus metrics: the broker's queue size can be read again")
            self._failing = False
        with self._cond:
            self._value = value
            self._read_at = time.monotonic()
            self._reads += 1
            self._cond.notify_all()
