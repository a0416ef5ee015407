"""``manage.py qcluster [--name NAME] [--run-once]``: run a cluster until SIGINT or SIGTERM."""

from __future__ import annotations

import os
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from qhive.cluster import Cluster, configure_logging
from qhive.errors import QhiveError

from qhive_django.conf import get_config
from qhive_django.runtime import SETUP


class Command(BaseCommand):
    help = "Start a qhive cluster: the workers that run queued tasks."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "-n", "--name", dest="cluster_name", default=None,
            help="the cluster to run: Q_CLUSTER['name'] or a key of Q_CLUSTER['ALT_CLUSTERS'] "
                 "(default: $Q_CLUSTER_NAME, else the root cluster)",
        )
        parser.add_argument("--run-once", action="store_true",
                            help="start the cluster, then stop it at once (a smoke test)")

    def handle(self, *args: Any, cluster_name: str | None = None, run_once: bool = False,
               **options: Any) -> None:
        name = cluster_name or os.environ.get("Q_CLUSTER_NAME") or None
        try:
            config = get_config(name)
        except QhiveError as exc:
            raise CommandError(str(exc)) from exc
        # Processes the cluster starts read the same cluster's settings.
        os.environ["Q_CLUSTER_NAME"] = config.cluster_name
        configure_logging(config)
        cluster = Cluster(config, setup=SETUP)
        if run_once:
            threading.Thread(target=_stop_when_started, args=(cluster,), daemon=True).start()
        try:
            code = cluster.run()
        except QhiveError as exc:  # not set up (a missing table): one line, exit 1
            raise CommandError(str(exc)) from exc
        if code:
            raise SystemExit(code)


def _stop_when_started(cluster: Any) -> None:
    cluster.started.wait()
    cluster.stop()
