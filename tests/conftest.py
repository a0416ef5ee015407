"""Fixtures of the end-to-end tests. ``cluster_settings`` and ``qcluster`` come from
the testkit (``qhive_testkit.qcluster``, a plugin of the whole session)."""

from qhive_testkit.services import redis_server  # noqa: F401 (a fixture)
