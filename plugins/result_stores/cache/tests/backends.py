"""The cache backends the tests run on, and a saver run in separate processes.

Imported by ``conftest.py`` (by path) and run as a script by the concurrency
tests: ``python backends.py '<json spec>'`` saves results of one group from a
process of its own, starting when it reads a line on stdin.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

from qhive_testkit.services import redis_url

#: The alias the stores under test use.
ALIAS = "results"
#: Signs the results in the tests (the contract's configs carry no key).
SECRET = "qhive-store-cache-test-secret"
#: Far above what the tests write: culling would drop index keys and fail them.
MAX_ENTRIES = 1_000_000


class CacheRouter:
    """Sends the database cache's queries (app label ``django_cache``) to one alias."""

    def __init__(self, database: str) -> None:
        self.database = database

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return self.database if model._meta.app_label == "django_cache" else None

    db_for_write = db_for_read


def cache_settings(backend: str, token: str) -> tuple[dict[str, Any], list[Any]]:
    """``(CACHES, DATABASE_ROUTERS)`` with the cache ``ALIAS`` on ``backend``;
    ``token`` keeps this run's keys apart from anything else on a shared server."""
    options = {"OPTIONS": {"MAX_ENTRIES": MAX_ENTRIES}}
    if backend == "redis":
        cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                 "LOCATION": redis_url(), "KEY_PREFIX": token}
    elif backend == "locmem":
        cache = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                 "LOCATION": token, **options}
    elif backend == "database":
        cache = {"BACKEND": "django.core.cache.backends.db.DatabaseCache",
                 "LOCATION": f"qhive_cache_{token.replace('-', '_')}", **options}
    else:
        raise ValueError(f"unknown backend {backend!r}")
    routers = [CacheRouter("postgres")] if backend == "database" else []
    return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            ALIAS: cache}, routers


def save_group(spec: dict[str, Any]) -> None:
    """Save ``spec["count"]`` results of group ``spec["group"]`` once stdin says go."""
    import django

    django.setup()
    from django.test.utils import override_settings
    from qhive.config import Config
    from qhive.contracts import TaskResult
    from qhive_store_cache.store import CacheResultStore

    caches, routers = cache_settings(spec["backend"], spec["token"])
    with override_settings(CACHES=caches, DATABASE_ROUTERS=routers):
        config = Config.from_dict({"name": spec["name"]}, secret_key=SECRET)
        store = CacheResultStore(config=config, cache=ALIAS)
        store.get("warm-up")  # connect before the start, so that the saves overlap
        print("ready", flush=True)
        sys.stdin.readline()
        now = dt.datetime.now(dt.UTC)
        for n in range(spec["count"]):
            stopped = now + dt.timedelta(microseconds=n)
            store.save(TaskResult(id=f"{spec['prefix']}{n:05d}", name=f"{spec['prefix']}{n}",
                                  func="math.floor", started=stopped, stopped=stopped,
                                  success=n % 3 != 0, result=n, group=spec["group"]))
        store.close()
    print("done", flush=True)


if __name__ == "__main__":
    save_group(json.loads(sys.argv[1]))
