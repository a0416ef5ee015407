"""The Redis store passes the result store contract on the shared Redis ($QHIVE_TEST_REDIS_*)."""

import dataclasses

import pytest
from qhive_store_redis.store import RedisResultStore
from qhive_testkit import ResultStoreContract
from qhive_testkit.services import redis_url, require

SECRET = "qhive-store-redis-test-secret"


class TestRedisResultStore(ResultStoreContract):
    @pytest.fixture
    def make_result_store(self):
        require("redis")
        # Each contract config has a name of its own: its keys are apart from any other.
        return lambda config: RedisResultStore(
            config=dataclasses.replace(config, secret_key=SECRET),
            redis=redis_url())
