"""Fixtures of the IronMQ broker's tests: the emulator (``qhive_testkit.ironmq_emulator``)
and, for the cluster tests, ``Q_CLUSTER`` per test and real ``qcluster`` processes."""

from __future__ import annotations

import signal
import uuid

import pytest
from qhive_testkit.ironmq_emulator import (  # noqa: F401 (fixtures)
    ironmq_emulator,
    ironmq_emulator_process,
)
from qhive_testkit.qcluster import QCluster


@pytest.fixture
def cluster_settings(django_project):
    """``cluster_settings(**settings)``: apply ``Q_CLUSTER`` for this test on the web side
    and return it for :func:`qcluster`; each call has its own ``name`` (its own queue
    and results), results in the ORM store on the ``default`` database."""
    from django.test import override_settings
    from qhive_django.conf import reset

    overrides = []

    def apply(**settings) -> dict:
        q = {"name": f"iron{uuid.uuid4().hex[:10]}",
             "result_store_options": {"database": "default"}, "workers": 2, "save_limit": 0,
             "guard_cycle": 0.2, **settings}
        override = override_settings(Q_CLUSTER=q)
        override.enable()
        overrides.append(override)
        return q

    yield apply
    for override in reversed(overrides):
        override.disable()
    reset()  # forget the brokers built for this test's emulator


@pytest.fixture
def qcluster(django_project, tmp_path):
    """``qcluster(q_cluster)``: a running ``manage.py qcluster``; every one still
    running at the end of the test is killed."""
    started = []

    def start(q_cluster: dict) -> QCluster:
        cluster = QCluster(django_project, q_cluster, tmp_path / f"qcluster{len(started)}.log")
        started.append(cluster)
        cluster.wait_for_log("running (pid")
        return cluster

    yield start
    for cluster in started:
        if cluster.process.poll() is None:
            cluster.signal_group(signal.SIGKILL)
