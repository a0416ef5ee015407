"""Fixtures of the MongoDB broker's tests: the MongoDB test server
(``qhive_testkit.mongo_server``, or the real MongoDB at ``$QHIVE_TEST_MONGO_URL``) and, for
the cluster tests, ``Q_CLUSTER`` per test and real ``qcluster`` processes."""

from __future__ import annotations

import uuid

import pytest
from qhive_testkit.mongo_server import (  # noqa: F401 (fixtures)
    mongo_server_process,
    mongo_test_server,
)


@pytest.fixture
def cluster_settings(django_project):
    """``cluster_settings(url, **settings)``: apply ``Q_CLUSTER`` for this test on the web
    side — the MongoDB broker on the server at ``url`` — and return it for
    :func:`qcluster`. Each call has its own ``name`` (its own queue and results); results
    go to the ORM store on the ``default`` database."""
    from django.test import override_settings
    from qhive_django.conf import reset

    overrides = []

    def apply(url: str, **settings) -> dict:
        q = {"name": f"mongo{uuid.uuid4().hex[:10]}", "mongo": {"host": url},
             "mongo_db": "qhive_e2e", "result_store_options": {"database": "default"},
             "workers": 2, "save_limit": 0, "guard_cycle": 0.2, "poll": 0.05, **settings}
        override = override_settings(Q_CLUSTER=q)
        override.enable()
        overrides.append(override)
        return q

    yield apply
    for override in reversed(overrides):
        override.disable()
    reset()  # forget the brokers built for this test's server

