"""The cache store passes the result store contract on Django's Redis cache,
LocMem and the database cache on PostgreSQL."""

import pytest
from qhive_store_cache.store import CacheResultStore
from qhive_testkit import ResultStoreContract


class TestCacheResultStore(ResultStoreContract):
    @pytest.fixture
    def make_result_store(self, cache_backend, signed):
        return lambda config: CacheResultStore(config=signed(config), cache=cache_backend.alias)
