"""The task metrics: their definitions, what one saved result adds to them, and how a
worker counts them.

A result is counted where ``qhive_post_execute`` runs for it: in the worker that ran
the task, or in the sentinel for a task whose worker died or timed out. Workers count
with ``prometheus_client``'s ``Counter`` and ``Histogram`` in multiprocess mode
(:class:`WorkerTaskMetrics`); the sentinel writes the same samples into files of its own
(:class:`qhive_metrics_prometheus.counts.SentinelFiles`); the scrape adds all the files
up (:class:`qhive_metrics_prometheus.counts.CountDirectory`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram, values

if TYPE_CHECKING:
    from qhive.contracts import TaskResult

    from qhive_metrics_prometheus.options import Options

logger = logging.getLogger("qhive.metrics.prometheus")

TASKS = "qhive_tasks"
RUN_SECONDS = "qhive_task_run_seconds"
WAIT_SECONDS = "qhive_task_queue_wait_seconds"
#: The metrics of this module: the only ones a scrape reads from the count directory.
NAMES = frozenset((TASKS, RUN_SECONDS, WAIT_SECONDS))
HELP = {
    TASKS: "Task results saved, by task function and outcome (each attempt of a retried "
           "task counts).",
    RUN_SECONDS: "Seconds from a worker starting a task to its result.",
    WAIT_SECONDS: "Seconds from enqueue to a worker starting the task (a redelivered task: "
                  "from its first enqueue).",
}
LABELS = {TASKS: ("cluster", "func", "status"), RUN_SECONDS: ("cluster", "func"),
          WAIT_SECONDS: ("cluster",)}


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """What one saved result adds: one count of ``func`` and ``status``, and its run and
    queue wait in seconds (None for a task with no start time)."""

    func: str
    status: str
    run: float | None
    wait: float | None


def observe(task: dict[str, Any], result: TaskResult) -> Observation:
    run = wait = None
    # Set by the worker as it starts the task (for a task whose worker died: the start
    # its slot kept).
    run_started = task.get("run_started")
    if isinstance(run_started, (int, float)):
        run = max(0.0, result.stopped.timestamp() - run_started)
        enqueued = task.get("started")
        if isinstance(enqueued, dt.datetime) and enqueued.tzinfo is not None:
            # Two clocks (the caller's and the worker's): a small skew must not make a
            # negative wait.
            wait = max(0.0, run_started - enqueued.timestamp())
    return Observation(result.func, "success" if result.success else "failure", run, wait)


class WorkerTaskMetrics:
    """The metrics as a worker of the cluster counts them, one saved result at a time.

    The worker inherited ``PROMETHEUS_MULTIPROC_DIR`` from the sentinel, so these metrics
    keep their values in files of the worker's pid in that directory; they are registered
    nowhere (the sentinel's scrape reads the files).

    :raises RuntimeError: ``prometheus_client`` is not in multiprocess mode here.
    """

    def __init__(self, cluster: str, options: Options) -> None:
        if not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(
                f"prometheus_client is not in multiprocess mode in worker process "
                f"{os.getpid()}, though PROMETHEUS_MULTIPROC_DIR="
                f"{os.environ.get('PROMETHEUS_MULTIPROC_DIR')!r}: was it imported before the "
                f"variable was set?")
        self.cluster = cluster
        self.tasks = Counter(TASKS, HELP[TASKS], LABELS[TASKS], registry=None)
        self.run_seconds = Histogram(RUN_SECONDS, HELP[RUN_SECONDS], LABELS[RUN_SECONDS],
                                     buckets=options.run_buckets, registry=None)
        self.wait_seconds = Histogram(WAIT_SECONDS, HELP[WAIT_SECONDS], LABELS[WAIT_SECONDS],
                                      buckets=options.wait_buckets,
                                      registry=None).labels(cluster)
        # labels() checks and converts its values at each call: one lookup per result here.
        self._tasks: dict[tuple[str, str], Any] = {}
        self._runs: dict[str, Any] = {}

    def count(self, task: dict[str, Any], result: TaskResult) -> None:
        self.add(observe(task, result))

    def add(self, seen: Observation) -> None:
        key = (seen.func, seen.status)
        counter = self._tasks.get(key)
        if counter is None:
            counter = self._tasks[key] = self.tasks.labels(self.cluster, *key)
        counter.inc()
        if seen.run is not None:
            run = self._runs.get(seen.func)
            if run is None:
                run = self._runs[seen.func] = self.run_seconds.labels(self.cluster, seen.func)
            run.observe(seen.run)
        if seen.wait is not None:
            self.wait_seconds.observe(seen.wait)
