"""The plugin's hooks: the ``qhive.plugins`` entry point ``prometheus`` names this module.

Nothing happens unless the cluster's config has ``Q_CLUSTER["plugins"]["prometheus"]``:
every process of a project loads hook-only plugins (web, workers, the sentinel), and
only a configured cluster's sentinel opens a port and imports ``prometheus_client``.

* ``qhive_check_config``: the options, checked (``manage.py check``, ``qplugins check``);
* ``qhive_cluster_started`` / ``qhive_cluster_stopping`` (the sentinel's main thread):
  serve ``/metrics``, then stop serving. A port in use is one error line: the cluster
  runs on, without metrics;
* ``qhive_post_execute`` (the sentinel's hook thread): count each saved result.
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import TYPE_CHECKING, Any

from qhive.plugins import hookimpl

from qhive_metrics_prometheus import options as _options

if TYPE_CHECKING:
    from qhive.config import Config
    from qhive.contracts import TaskResult

    from qhive_metrics_prometheus.exporter import Exporter

logger = logging.getLogger("qhive.metrics.prometheus")

#: The exporters of the clusters running in this process, by cluster name (one, in a
#: ``qcluster`` process; tests and embedding may run more).
_exporters: dict[str, Exporter] = {}
_lock = threading.Lock()


@hookimpl
def qhive_check_config(config: Config) -> list[str]:
    return _options.read(config)[1]


@hookimpl
def qhive_cluster_started(cluster: Any) -> None:
    config = cluster.config
    if not _options.configured(config):
        return
    options, problems = _options.read(config)
    for problem in problems:
        logger.error("%s; Q Cluster %s runs without metrics", problem, cluster.name)
    if options is None:
        return
    try:
        # Here, not at the top: only a configured cluster's sentinel needs
        # prometheus_client (every process of the project imports this module).
        from qhive_metrics_prometheus.exporter import Exporter

        exporter = Exporter(cluster, options)
        exporter.start()
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
        previous = _exporters.pop(config.cluster_name, None)
        _exporters[config.cluster_name] = exporter
    if previous is not None:  # a cluster of that name ran here before and never stopped
        previous.stop()
    logger.info("Q Cluster %s serving Prometheus metrics on %s", cluster.name, exporter.url)


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
def qhive_post_execute(task: dict[str, Any], result: TaskResult) -> None:
    exporter = _exporters.get(result.cluster) if _exporters else None
    if exporter is not None:
        exporter.observe(task, result)
