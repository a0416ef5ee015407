"""What the sentinel knows about its cluster, read at each scrape.

The task metrics are counted elsewhere, as results are saved, in the count directory
(:mod:`qhive_metrics_prometheus.counts`). Every sample carries ``cluster``: the
cluster's name (its queue: ``Q_CLUSTER['name']`` or the ``ALT_CLUSTERS`` key), stable
across restarts, unlike the random name of a run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from qhive_metrics_prometheus.probe import QueueSizeProbe


class ClusterCollector(Collector):
    """Read at each scrape (on the HTTP server's thread): the cluster's
    :attr:`~qhive.cluster.Cluster.stat` (the numbers ``qinfo`` and ``qmonitor`` show),
    its :meth:`~qhive.cluster.Cluster.counters` (what its workers and monitor counted,
    backend errors included) and the broker's queue size through
    :class:`~qhive_metrics_prometheus.probe.QueueSizeProbe`. A scrape takes no lock of
    the cluster: workers keep their numbers in shared memory.
    """

    def __init__(self, cluster: Any, probe: QueueSizeProbe) -> None:
        self.cluster = cluster
        self.label = cluster.config.cluster_name
        self.probe = probe

    def collect(self) -> Iterator[Metric]:
        cluster, label = self.cluster, [self.label]
        stat = cluster.stat  # what qinfo and qmonitor show, as of this read
        counts = cluster.counters()

        size = self.probe.size()
        if size is not None:
            yield _gauge("qhive_queue_size", "Tasks waiting in the broker for this cluster's "
                         "queue (read at most once a second).", label, size)
        yield _gauge("qhive_tasks_prefetched", "Tasks the cluster's workers took from the "
                     "broker and have not started yet.", label, counts["prefetched"])
        yield _gauge("qhive_results_unsaved", "Results of this cluster not yet saved in the "
                     "result store.", label, counts["unsaved"])

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
                       counts["processed"])
        yield _counter("qhive_cluster_tasks_failed", "Failed results the cluster saved.", label,
                       counts["failed"])
        yield _counter("qhive_broker_errors", "Failed calls to the broker (each is retried).",
                       label, counts["broker_errors"])
        yield _counter("qhive_result_store_errors", "Failed calls to the result store (each "
                       "is retried).", label, counts["store_errors"])


def _gauge(name: str, documentation: str, labels: list[str], value: float) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=["cluster"])
    family.add_metric(labels, value)
    return family


def _counter(name: str, documentation: str, labels: list[str], value: float) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=["cluster"])
    family.add_metric(labels, value)
    return family
