"""Fixtures of the end-to-end tests: ``Q_CLUSTER`` for a test and real qcluster processes."""

from __future__ import annotations

import json
import signal
import uuid

import pytest
from qhive_testkit.qcluster import QCluster
from qhive_testkit.services import redis_server  # noqa: F401 (a fixture)

#: Q_CLUSTER keys that choose a broker.
BROKER_KEYS = {"broker", "broker_class", "redis", "django_redis", "sqs", "iron_mq", "mongo", "orm"}


@pytest.fixture
def cluster_settings(django_project):
    """``cluster_settings(database="default", caches=None, **settings)``: apply
    ``Q_CLUSTER`` (and ``CACHES``) for this test on the web side and return the
    ``Q_CLUSTER`` dict for :func:`qcluster`. Each call gets its own ``name``: its
    own queue and results. Results go to ``database``, and so does the queue
    unless ``settings`` choose another broker."""
    from django.test import override_settings

    overrides = []

    def apply(database: str = "default", caches: dict | None = None, **settings) -> dict:
        q = {"name": f"e2e{uuid.uuid4().hex[:10]}",
             "result_store_options": {"database": database}, "workers": 2, "save_limit": 0,
             "guard_cycle": 0.2, "poll": 0.05, **settings}
        if not BROKER_KEYS & set(settings):  # the ORM broker, on the same database
            q["orm"] = database
        override = override_settings(Q_CLUSTER=q, **({"CACHES": caches} if caches else {}))
        override.enable()
        overrides.append(override)
        return q

    yield apply
    for override in reversed(overrides):
        override.disable()


@pytest.fixture
def qcluster(django_project, tmp_path):
    """``qcluster(q_cluster, *args, caches=None)``: a running ``manage.py qcluster``
    (``args`` such as ``"--name", "long"``); every one still running at the end of the
    test is killed."""
    started = []

    def start(q_cluster: dict, *args: str, caches: dict | None = None) -> QCluster:
        env = {"QHIVE_TEST_CACHES": json.dumps(caches)} if caches else {}
        cluster = QCluster(django_project, q_cluster,
                           tmp_path / f"qcluster{len(started)}.log", *args, env=env)
        started.append(cluster)
        cluster.wait_for_log("running (pid")
        return cluster

    yield start
    for cluster in started:
        if cluster.process.poll() is None:
            cluster.stop(signal.SIGKILL)
