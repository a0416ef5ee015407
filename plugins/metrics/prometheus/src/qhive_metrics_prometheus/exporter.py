"""One cluster's ``/metrics`` endpoint: a registry of its own, the HTTP server and the
queue size thread, started and stopped together.

The registry is not ``prometheus_client``'s global one: the endpoint shows this
cluster's metrics and nothing that other code of the process registers there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server

from qhive_metrics_prometheus.collector import ClusterCollector, TaskMetrics
from qhive_metrics_prometheus.probe import QueueSizeProbe

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from qhive.contracts import TaskResult

    from qhive_metrics_prometheus.options import Options

logger = logging.getLogger("qhive.metrics.prometheus")


class Exporter:
    """:param cluster: the running :class:`qhive.cluster.Cluster`.
    :param options: its checked ``Q_CLUSTER['plugins']['prometheus']``."""

    def __init__(self, cluster: Any, options: Options) -> None:
        self.options = options
        self.registry = CollectorRegistry()
        self.tasks = TaskMetrics(self.registry, cluster.config.cluster_name, options)
        self.probe = QueueSizeProbe(cluster.pipeline)
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
        """Listen, then start the queue size thread.

        :raises OSError: the address cannot be listened on (a port in use).
        """
        self.server, self.thread = start_http_server(
            self.options.port, self.options.addr, registry=self.registry)
        self.thread.name = "qhive-metrics-http"
        try:
            self.probe.start()
        except BaseException:
            self.stop()
            raise

    def observe(self, task: dict[str, Any], result: TaskResult) -> None:
        self.tasks.observe(task, result)

    def stop(self) -> None:
        """Stop listening and close the queue size thread's connections."""
        if self.server is not None:
            self.server.shutdown()  # returns once serve_forever() has returned
            with contextlib.suppress(OSError):
                self.server.server_close()
        if self.thread is not None:
            self.thread.join(5)
        self.probe.stop()
