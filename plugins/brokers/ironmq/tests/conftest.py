"""Fixtures of the IronMQ broker's tests: the emulator (``qhive_testkit.ironmq_emulator``)
and, for the cluster tests, ``Q_CLUSTER`` per test and real ``qcluster`` processes."""

from __future__ import annotations

import uuid

import pytest
from qhive_testkit.ironmq_emulator import (  # noqa: F401 (fixtures)
    ironmq_emulator,
    ironmq_emulator_process,
)


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

