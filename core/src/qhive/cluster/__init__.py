"""The worker cluster: a sentinel (the ``qcluster`` process) guarding worker
processes that take, run and save their own tasks. See
:mod:`qhive.cluster.cluster` for how it works and how it stops."""

from qhive.cluster.cluster import Cluster
from qhive.cluster.logs import configure_logging
from qhive.cluster.stat import Stat

__all__ = ["Cluster", "Stat", "configure_logging"]
