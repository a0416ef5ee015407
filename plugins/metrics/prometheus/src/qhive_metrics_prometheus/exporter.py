"""One cluster's ``/metrics`` endpoint: the count directory, a registry of its own, the
HTTP server and the queue size thread, started and stopped together.

The registry is not ``prometheus_client``'s global one: the endpoint shows this
cluster's metrics and nothing that other code of the process registers there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server

from qhive_metrics_prometheus.collector import ClusterCollector
from qhive_metrics_prometheus.counts import CountDirectory
from qhive_metrics_prometheus.probe import QueueSizeProbe
from qhive_metrics_prometheus.taskmetrics import observe

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from qhive.contracts import TaskResult

    from qhive_metrics_prometheus.options import Options

logger = logging.getLogger("qhive.metrics.prometheus")


class Exporter:
    """:param cluster: the :class:`qhive.cluster.Cluster`, about to start its workers.
    :param options: its checked ``Q_CLUSTER['plugins']['prometheus']``."""

    def __init__(self, cluster: Any, options: Options) -> None:
        self.options = options
        self.counts = CountDirectory(cluster.config.cluster_name, options)
        self.probe = QueueSizeProbe(cluster.pipeline)
        self.registry = CollectorRegistry()
        self.registry.register(self.counts)
        self.registry.register(ClusterCollector(cluster, self.probe))
        self.server: WSGIServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where the metrics are, with the port the system chose for port 0."""
        assert self.server is not None
        host, port = self.server.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/metrics"

    def start(self) -> None:
        """Open the count directory (before any worker starts: each is given it), listen,
        then start the queue size thread. Nothing stays open when it fails.

        :raises CountDirectoryError: ``PROMETHEUS_MULTIPROC_DIR`` names no directory.
        :raises OSError: the address cannot be listened on (a port in use).
        """
        self.counts.open()
        try:
            self.server, self.thread = start_http_server(
                self.options.port, self.options.addr, registry=self.registry)
            self.thread.name = "qhive-metrics-http"
            self.probe.start()
        except BaseException:
            self.stop(remove=True)
            raise

    def observe(self, task: dict[str, Any], result: TaskResult) -> None:
        """Count a result the sentinel saved (a task whose worker died or timed out)."""
        self.counts.add(observe(task, result))

    def stop(self, remove: bool = False) -> None:
        """Stop listening, close the queue size thread's connections, and take the
        variables out of the environment (``remove``: the directory too)."""
        if self.server is not None:
            self.server.shutdown()  # returns once serve_forever() has returned
            with contextlib.suppress(OSError):
                self.server.server_close()
        if self.thread is not None:
            self.thread.join(5)
        self.probe.stop()
        self.counts.close(remove=remove)
