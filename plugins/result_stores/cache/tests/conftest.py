"""Fixtures of the cache store's tests: a cache alias on a real backend, per test.

``cache_backend`` runs a test once per backend — Django's ``RedisCache`` on the
shared Redis (``$QHIVE_TEST_REDIS_*``; this session's own ``KEY_PREFIX``; the server
is never flushed, only this prefix's keys are deleted afterwards), ``LocMemCache``
and ``DatabaseCache`` on PostgreSQL — with ``settings.CACHES`` overridden for the
test. A backend whose server is down skips (fails under QHIVE_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from qhive_testkit.services import delete_redis_keys, is_up, require

BACKENDS_FILE = Path(__file__).with_name("backends.py")
#: backend -> the service it needs
SERVICES = {"redis": "redis", "locmem": None, "database": "postgres"}


def _load_backends() -> Any:
    spec = importlib.util.spec_from_file_location("qhive_store_cache_test_backends",
                                                  BACKENDS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


backends = _load_backends()


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    token: str
    alias: str = backends.ALIAS

    def saver(self) -> list[str]:
        """argv of a process that saves results into this backend (see backends.py)."""
        return [sys.executable, str(BACKENDS_FILE)]


@pytest.fixture(scope="session")
def cache_token():
    """This session's key prefix / LocMem location / cache table suffix."""
    token = f"qhive-store-cache-{uuid.uuid4().hex[:10]}"
    yield token
    if is_up("redis"):
        delete_redis_keys(f"{token}:*")


@pytest.fixture(scope="session")
def database_cache_table(django_project, cache_token):
    """Creates this session's cache table in the PostgreSQL test database, once."""
    from django.core.management import call_command
    from django.test import override_settings

    if "postgres" not in django_project.aliases:
        pytest.skip("PostgreSQL came up after the test session started")
    caches, routers = backends.cache_settings("database", cache_token)
    with override_settings(CACHES=caches, DATABASE_ROUTERS=routers):
        call_command("createcachetable", database="postgres", verbosity=0)


def _use(request, backend: str, token: str) -> Backend:
    from django.test import override_settings

    service = SERVICES[backend]
    if service is not None:
        require(service)
    if backend == "database":
        request.getfixturevalue("database_cache_table")
    caches, routers = backends.cache_settings(backend, token)
    override = override_settings(CACHES=caches, DATABASE_ROUTERS=routers)
    override.enable()
    request.addfinalizer(override.disable)
    return Backend(backend, token)


@pytest.fixture(params=list(SERVICES))
def cache_backend(request, django_project, cache_token) -> Backend:
    """The store's cache alias on each backend in turn (settings overridden for the test)."""
    return _use(request, request.param, cache_token)


@pytest.fixture(params=["redis", "database"])
def shared_backend(request, django_project, cache_token) -> Backend:
    """Like ``cache_backend``, on the backends other processes see."""
    return _use(request, request.param, cache_token)


@pytest.fixture
def signed():
    """``config -> config`` with the tests' secret key (the contract's configs have none)."""
    return lambda config: dataclasses.replace(config, secret_key=backends.SECRET)


@pytest.fixture
def make_config():
    """``(**Q_CLUSTER) -> Config`` with a name of its own and the tests' secret key."""
    from qhive.config import Config

    def make(cluster: str | None = None, **settings: Any) -> Config:
        settings = {"name": f"cachetest-{uuid.uuid4().hex[:10]}", **settings}
        return Config.from_dict(settings, cluster=cluster, secret_key=backends.SECRET)

    return make
