"""The Disque broker passes qhive's broker contract on a real ``disque-server`` (built from
the repository's vendored source; one server per test session, queues of each test's own)."""

import pytest
from qhive_broker_disque.broker import DisqueBroker
from qhive_testkit import BrokerContract


class TestDisqueBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self, disque_server):
        return lambda queue, config: DisqueBroker(queue, config=config,
                                                  disque_nodes=[disque_server.address])
