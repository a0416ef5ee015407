"""The plugin's hooks: the ``qhive.plugins`` entry point ``prometheus`` names this module.

Nothing happens unless the cluster's config has ``Q_CLUSTER["plugins"]["prometheus"]``:
every process of a project loads hook-only plugins (web, workers, the sentinel), and
only a configured cluster's sentinel opens a port, and only its workers count.

* ``qhive_check_config``: the options, checked (``manage.py check``, ``qplugins check``);
* ``qhive_cluster_starting`` / ``qhive_cluster_stopping`` (the sentinel's main thread):
  make the count directory and serve ``/metrics`` before any worker starts, then stop
  serving. A port in use is one error line: the cluster runs on, without metrics, and
  its workers count nothing;
* ``qhive_configure`` (every process, as it builds a pipeline): in a worker of a
  cluster that serves metrics (the sentinel gave it ``QHIVE_PROMETHEUS_CLUSTER``),
  remember the options and put ``prometheus_client`` in multiprocess mode, to count;
* ``qhive_post_execute``: count each saved result — in the worker that saved it, or in
  the sentinel for a task whose worker died or timed out.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from qhive.plugins import hookimpl

from qhive_metrics_prometheus import options as _options

if TYPE_CHECKING:
    from qhive.config import Config
    from qhive.contracts import TaskResult

    from qhive_metrics_prometheus.exporter import Exporter
    from qhive_metrics_prometheus.taskmetrics import WorkerTaskMetrics

logger = logging.getLogger("qhive.metrics.prometheus")

#: Set by the sentinel for its workers (counts.CLUSTER_VARIABLE; not imported from there:
#: that module imports prometheus_client, which only a configured cluster needs).
CLUSTER_VARIABLE = "QHIVE_PROMETHEUS_CLUSTER"

#: The exporters of the clusters running in this process, by cluster name (one, in a
#: ``qcluster`` process; tests and embedding may run more).
_exporters: dict[str, Exporter] = {}
_lock = threading.Lock()


class _Worker:
    """This process's counting, as a worker of a cluster that serves metrics."""

    def __init__(self) -> None:
        self.cluster: str | None = None  # None: not such a worker, or it cannot count
        self.options: _options.Options | None = None
        self.metrics: WorkerTaskMetrics | None = None
        self.failed = False  # a failure to count was said (once per process)


_worker = _Worker()


@hookimpl
def qhive_check_config(config: Config) -> list[str]:
    return _options.read(config)[1]


@hookimpl
def qhive_cluster_starting(cluster: Any) -> None:
    config = cluster.config
    if not _options.configured(config):
        return
    options, problems = _options.read(config)
    for problem in problems:
        logger.error("%s; Q Cluster %s runs without metrics", problem, cluster.name)
    if options is None:
        return
    with _lock:
        previous = _exporters.pop(config.cluster_name, None)
    if previous is not None:  # a cluster of that name ran here before and never stopped
        previous.stop()  # first: it gives back the environment it changed
    try:
        # Here, not at the top: only a configured cluster's sentinel needs
        # prometheus_client (every process of the project imports this module). And
        # before the count directory's variable is set, so that the sentinel's own
        # prometheus_client stays in-process.
        from qhive_metrics_prometheus.counts import CountDirectoryError
        from qhive_metrics_prometheus.exporter import Exporter

        exporter = Exporter(cluster, options)
        exporter.start()
    except CountDirectoryError as exc:
        logger.error("Prometheus metrics: %s; Q Cluster %s runs without metrics", exc,
                     cluster.name)
        return
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fix = f"choose a free port in {_options.setting(config, 'port')} (0: any free port)"
        else:  # an address not of this host, a port below 1024 without the right
            fix = f"check {_options.setting(config, 'addr')} and {_options.setting(config, 'port')}"
        logger.error("Prometheus metrics: cannot listen on %s:%s (%s): %s; Q Cluster %s runs "
                     "without metrics", options.addr, options.port, exc.strerror or exc, fix,
                     cluster.name)
        return
    except Exception:  # metrics are never worth stopping a cluster for
        logger.exception("Prometheus metrics: could not start; Q Cluster %s runs without "
                         "metrics", cluster.name)
        return
    with _lock:
        _exporters[config.cluster_name] = exporter
    logger.info("Q Cluster %s serving Prometheus metrics on %s", cluster.name, exporter.url)
    # Where to look when a worker's counts are missing (the path last: it may hold spaces).
    logger.info("Q Cluster %s counting worker metrics for Prometheus in %s", cluster.name,
                exporter.counts.path)


@hookimpl
def qhive_cluster_stopping(cluster: Any) -> None:
    with _lock:
        exporter = _exporters.pop(cluster.config.cluster_name, None)
    if exporter is None:
        return
    try:
        exporter.stop()
    except Exception:
        logger.exception("Prometheus metrics: stopping the metrics server failed")


@hookimpl
def qhive_configure(config: Config) -> None:
    # A worker of a cluster serving metrics: the sentinel set the variable before it
    # asked for the worker. The sentinel itself counts through its exporter.
    if (os.environ.get(CLUSTER_VARIABLE) == config.cluster_name and not _exporters
            and _worker.cluster is None):
        options = _options.read(config)[0]
        if options is not None:
            _worker.cluster, _worker.options = config.cluster_name, options
            _count_in_files()


def _count_in_files() -> None:
    """Multiprocess mode from the worker's start: the metrics the project makes in the
    worker from now on count in the directory too, as in a process that imported
    ``prometheus_client`` with the variable set."""
    try:
        # Late: only a worker of a cluster serving metrics imports prometheus_client.
        from qhive_metrics_prometheus.taskmetrics import use_multiprocess_mode

        use_multiprocess_mode()
    except Exception as exc:  # never worth a worker that does not start
        _worker.cluster = None  # it never will: said once, then quiet
        _cannot_count(exc)


@hookimpl
def qhive_post_execute(task: dict[str, Any], result: TaskResult) -> None:
    if task.get("sync"):  # run by a caller, not by the cluster
        return
    exporter = _exporters.get(result.cluster) if _exporters else None
    if exporter is not None:  # the sentinel: a task whose worker died or timed out
        exporter.observe(task, result)
    elif _worker.cluster is not None and _worker.cluster == result.cluster:
        _count_in_worker(task, result)


def _count_in_worker(task: dict[str, Any], result: TaskResult) -> None:
    try:
        metrics = _worker.metrics
        if metrics is None:
            assert _worker.cluster is not None and _worker.options is not None
            # Late: only a worker of a cluster serving metrics imports prometheus_client.
            from qhive_metrics_prometheus.taskmetrics import WorkerTaskMetrics

            try:
                metrics = _worker.metrics = WorkerTaskMetrics(_worker.cluster, _worker.options)
            except RuntimeError:
                _worker.cluster = None  # it never will: said once, then quiet
                raise
        metrics.count(task, result)
    except Exception as exc:  # once per worker: not a traceback per task
        _cannot_count(exc)


def _cannot_count(exc: Exception) -> None:
    log = logger.debug if _worker.failed else logger.error
    _worker.failed = True
    log("Prometheus metrics: worker process %d cannot count task results in %s (%s: %s); "
        "they are missing from the cluster's metrics", os.getpid(),
        os.environ.get("PROMETHEUS_MULTIPROC_DIR"), type(exc).__name__, exc)
