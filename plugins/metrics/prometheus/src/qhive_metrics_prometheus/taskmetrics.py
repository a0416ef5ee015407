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


def use_multiprocess_mode() -> None:
    """Put this worker's ``prometheus_client`` in multiprocess mode, if it is not yet.

    Workers are forks of the cluster's zygote, itself forked from the sentinel before the
    sentinel set ``PROMETHEUS_MULTIPROC_DIR``: a ``prometheus_client`` imported by then
    (by the project, as ``django-prometheus`` is at ``django.setup()``) chose in-process
    mode, in every worker. From here on, each value made keeps its number in the file of
    the pid it is made in (``counter_<pid>.db``): a replacement worker, a new pid, has
    files of its own. Values made before stay in-process.

    :raises RuntimeError: ``PROMETHEUS_MULTIPROC_DIR`` names no directory here.
    """
    if getattr(values.ValueClass, "_multiprocess", False):
        return
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not os.path.isdir(directory):
        raise RuntimeError(
            f"PROMETHEUS_MULTIPROC_DIR={directory!r} names no directory here: the sentinel "
            f"sets it as the cluster starts; does the project change os.environ in workers?")
    # What get_value_class() chooses when the variable is set at import. It follows
    # os.getpid(): a fork's values move to files of the fork's pid.
    values.ValueClass = values.MultiProcessValue()


class WorkerTaskMetrics:
    """The metrics as a worker of the cluster counts them, one saved result at a time.

    The worker has the sentinel's ``PROMETHEUS_MULTIPROC_DIR``, so these metrics keep
    their values in files of the worker's pid in that directory
    (:func:`use_multiprocess_mode`); they are registered nowhere (the sentinel's scrape
    reads the files).

    :raises RuntimeError: ``prometheus_client`` cannot count in multiprocess mode here.
    """

    def __init__(self, cluster: str, options: Options) -> None:
        use_multiprocess_mode()
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
