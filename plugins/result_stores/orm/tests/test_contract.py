"""The ORM result store passes the result store contract on SQLite, PostgreSQL and MariaDB."""

import pytest
from qhive_store_orm.store import OrmResultStore
from qhive_testkit import ResultStoreContract


class TestOrmResultStore(ResultStoreContract):
    @pytest.fixture
    def make_result_store(self, database):
        # The contract's configs carry no secret key: the store takes Django's SECRET_KEY.
        return lambda config: OrmResultStore(config=config, database=database)
