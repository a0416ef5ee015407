"""Fixtures of the Redis store's tests, on the shared Redis (``$QHIVE_TEST_REDIS_*``).

Each test's configs get project names of their own, so their keys are apart
from everything else on the server; the server is never flushed — what a test
leaves under its names is deleted afterwards.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from qhive_testkit.services import redis_url, require

URL = redis_url()
SECRET = "qhive-store-redis-test-secret"


@pytest.fixture
def raw_redis():
    """A plain redis-py client, to look at (and tamper with) what the store wrote."""
    import redis

    require("redis")
    client = redis.Redis.from_url(URL)
    yield client
    client.close()


@pytest.fixture
def make_config(raw_redis):
    """``(**Q_CLUSTER) -> Config`` with a name of its own and the tests' secret key;
    the keys of every name made are deleted after the test."""
    from qhive.config import Config

    names: list[str] = []

    def make(cluster: str | None = None, **settings: Any) -> Config:
        settings = {"name": f"redistest-{uuid.uuid4().hex[:10]}", **settings}
        names.append(settings["name"])
        return Config.from_dict(settings, cluster=cluster, secret_key=SECRET)

    yield make
    for name in set(names):
        keys = list(raw_redis.scan_iter(match=f"qhive:{{{name}}}:*", count=1000))
        if keys:
            raw_redis.delete(*keys)
