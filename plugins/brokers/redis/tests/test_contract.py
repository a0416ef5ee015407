"""The Redis broker passes qhive's broker contract on the shared Redis (``$QHIVE_TEST_REDIS_*``).

Every test of the contract uses queues of its own and deletes them afterwards:
nothing else on that server is touched.
"""

import pytest
from qhive_broker_redis.broker import RedisBroker
from qhive_testkit import BrokerContract
from qhive_testkit.services import redis_url, require


class TestRedisBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self):
        require("redis")
        return lambda queue, config: RedisBroker(queue, config=config,
                                                 redis=redis_url())
