"""The ORM broker passes qhive's broker contract on SQLite, PostgreSQL and MariaDB."""

import pytest
from qhive_broker_orm.broker import OrmBroker
from qhive_testkit import BrokerContract


class TestOrmBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self, database):
        return lambda queue, config: OrmBroker(queue, config=config, orm=database)
