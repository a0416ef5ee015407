"""The IronMQ broker passes qhive's broker contract: the real ``iron-mq`` client against
the IronMQ v3 emulator of ``qhive_testkit`` (no IronMQ server runs locally).

The emulator grants reservations from 1 s (the service: from 30 s), so that the
contract's redelivery tests with ``retry`` = 1 s need not wait half a minute, and takes
messages of up to 2 MiB (the contract round-trips 1 MiB; the service's plans take
64 KB or 256 KB).
"""

import pytest
from qhive_broker_ironmq.broker import IronMQBroker
from qhive_testkit import BrokerContract


class TestIronMQBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self, ironmq_emulator):
        options = ironmq_emulator.options(min_reservation_timeout=1)
        return lambda queue, config: IronMQBroker(queue, config=config, iron_mq=options)
