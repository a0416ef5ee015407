"""The metrics of one cluster, in a registry of its own.

Two kinds:

* counted as results pass (:class:`TaskMetrics`): every saved result goes through the
  sentinel's ``qhive_post_execute`` hook, whichever worker process ran it, so plain
  in-process counters are right across workers (no multiprocess mode, no files);
* read at scrape (:class:`ClusterCollector`): what the sentinel knows at that moment
  (workers, restarts, the cluster's own totals, backend errors) and the broker's queue
  size through :class:`~qhive_metrics_prometheus.probe.QueueSizeProbe`.

Every sample carries ``cluster``: the cluster's name (its queue: ``Q_CLUSTER['name']``
or the ``ALT_CLUSTERS`` key), stable across restarts, unlike the random name of a run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from qhive.contracts import TaskResult

    from qhive_metrics_prometheus.options import Options
    from qhive_metrics_prometheus.probe import QueueSizeProbe


class TaskMetrics:
    """Counters and histograms fed by ``qhive_post_execute``, one result at a time."""

    def __init__(self, registry: CollectorRegistry, cluster: str, options: Options) -> None:
        self.cluster = cluster
        self.tasks = Counter(
            "qhive_tasks", "Task results saved, by task function and outcome (each attempt "
            "of a retried task counts).", ["cluster", "func", "status"], registry=registry)
        self.run_seconds = Histogram(
            "qhive_task_run_seconds", "Seconds from a worker starting a task to its result.",
            ["cluster", "func"], buckets=options.run_buckets, registry=registry)
        # Its one label is the cluster's: labelled once, not per result.
        self.wait_seconds = Histogram(
            "qhive_task_queue_wait_seconds", "Seconds from enqueue to a worker starting the "
            "task (a redelivered task: from its first enqueue).", ["cluster"],
            buckets=options.wait_buckets, registry=registry).labels(cluster)

    def observe(self, task: dict[str, Any], result: TaskResult) -> None:
        func = result.func
        status = "success" if result.success else "failure"
        self.tasks.labels(self.cluster, func, status).inc()
        run_started = task.get("run_started")  # set by the sentinel as it gives the task out
        if isinstance(run_started, (int, float)):
            self.run_seconds.labels(self.cluster, func).observe(
                max(0.0, result.stopped.timestamp() - run_started))
            enqueued = task.get("started")
            if isinstance(enqueued, dt.datetime) and enqueued.tzinfo is not None:
                # Two clocks (the caller's and the sentinel's): a small skew must not
                # make a negative wait.
                self.wait_seconds.observe(max(0.0, run_started - enqueued.timestamp()))


class ClusterCollector(Collector):
    """What the sentinel knows, read at each scrape (on the HTTP server's thread).

    The cluster's :attr:`~qhive.cluster.Cluster.stat`, the numbers ``qinfo`` and
    ``qmonitor`` show, plus what the stat lacks: the results not yet saved, and the
    backend errors. A scrape takes no lock of the cluster.
    """

    def __init__(self, cluster: Any, probe: QueueSizeProbe) -> None:
        self.cluster = cluster
        self.label = cluster.config.cluster_name
        self.probe = probe

    def collect(self) -> Iterator[Metric]:
        cluster, label = self.cluster, [self.label]
        stat = cluster.stat  # what qinfo and qmonitor show, as of this read

        size = self.probe.size()
        if size is not None:
            yield _gauge("qhive_queue_size", "Tasks waiting in the broker for this cluster's "
                         "queue (read at most once a second).", label, size)
        yield _gauge("qhive_tasks_prefetched", "Tasks taken from the broker, waiting for a "
                     "worker of this cluster.", label, stat.task_q_size)
        # Not stat.done_q_size: that leaves out the batch being saved, held while the
        # result store fails.
        yield _gauge("qhive_results_unsaved", "Results of this cluster not yet saved in the "
                     "result store.", label, cluster.monitor.unsaved)

        family = GaugeMetricFamily("qhive_workers", "Worker processes, busy running a task "
                                   "or idle.", labels=["cluster", "state"])
        family.add_metric([self.label, "busy"], stat.busy)
        family.add_metric([self.label, "idle"], len(stat.workers) - stat.busy)
        yield family
        yield _gauge("qhive_workers_configured", "Worker processes the cluster keeps "
                     "(Q_CLUSTER['workers']).", label, stat.configured_workers)
        yield _counter("qhive_worker_restarts", "Worker processes replaced: recycled, died "
                       "or killed at a timeout.", label, stat.reincarnations)

        # As the cluster counts them (the "processed" and "failed" of qinfo and the stop line).
        yield _counter("qhive_cluster_tasks_processed", "Results the cluster saved.", label,
                       stat.processed)
        yield _counter("qhive_cluster_tasks_failed", "Failed results the cluster saved.", label,
                       stat.failed)

        # The pusher only talks to the broker; the monitor to the store, and to the broker
        # as it acknowledges. .get(): no iteration over a Counter another thread may grow.
        errors = [cluster.pusher.outage.totals, cluster.monitor.outage.totals]
        yield _counter("qhive_broker_errors", "Failed calls to the broker (each is retried).",
                       label, sum(t.get("broker", 0) for t in errors))
        yield _counter("qhive_result_store_errors", "Failed calls to the result store (each "
                       "is retried).", label, sum(t.get("result store", 0) for t in errors))


def _gauge(name: str, documentation: str, labels: list[str], value: float) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=["cluster"])
    family.add_metric(labels, value)
    return family


def _counter(name: str, documentation: str, labels: list[str], value: float) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=["cluster"])
    family.add_metric(labels, value)
    return family
