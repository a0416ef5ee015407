"""qhive and Django Q2: one small Django project, two task queues, three brokers.

Both are measured with the same project (written into the work directory by
:meth:`DjangoQueue.prepare`): the same ``add`` task, the same database settings, the same
``Q_CLUSTER`` keys (``workers=2``, ``timeout=30``, ``retry=60``, ``save_limit=0``) and
every other key at its default. Only ``INSTALLED_APPS`` and the imports of the client
differ. ``manage.py qcluster`` is the worker command of both.

Databases: SQLite in the work directory (WAL, ``synchronous=NORMAL``, 30 s busy timeout:
what qhive's ORM broker README recommends, given to Django Q2 too), or a PostgreSQL
database ``qhive_bench_<system>_<broker>``. ``CONN_MAX_AGE = 60`` for both: with Django's
default of 0, Django Q2's ORM broker (which calls ``close_old_connections()`` before every
query) would reconnect on every dequeue. Each run starts from a copy of a migrated
template (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL).

With the Redis broker the results still go to the Django database (Django Q2 always
saves them there): PostgreSQL. The same with SQS, IronMQ, MongoDB and Disque, whose
servers are test servers here (see bench/services.py): their figures show each queue's
overhead on a local stand-in, not what Amazon SQS, IronMQ or MongoDB would give. Django Q2
has no Disque broker any more: only qhive runs on it.

qhive also runs as ``redis+redis-store``: the same Redis broker, its results in qhive's
Redis result store (``qhive-store-redis``) on a Redis database of its own; its Django
database (SQLite) then holds no task and no result. Django Q2 has no such store.

The cluster has 2 workers, or ``$BENCH_WORKERS`` (the scaling curves), read by the
generated settings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

from qhive_testkit import ironmq_emulator  # the test server's credentials (bench/services.py)

from systems.base import REPO_DIR, WORKLOADS_FILE, Services, System

CLUSTER_NAME = "bench"
#: qhive's Redis broker with results in qhive's Redis result store (``result_store: "redis"``).
REDIS_STORE = "redis+redis-store"
#: The Redis database of the Redis result store, one per system so that the client counts
#: results with one DBSIZE (the broker stays on the database of the harness's URL; the
#: peers use 1-4, 11 and 14). Flushed by prepare().
STORE_DBS = {"qhive": 5}
BASELINE_STORE_DB = 6  # qhive@REF
#: The keys set for both systems; everything else is at its default.
COMMON_Q_CLUSTER = {"name": CLUSTER_NAME, "workers": 2, "timeout": 30, "retry": 60,
                    "save_limit": 0}
DJANGO = "django>=5.2,<6"
PSYCOPG = "psycopg[binary]>=3.2"
#: Brokers on a test server of the harness (bench/services.py), results in PostgreSQL.
TEST_SERVER_BROKERS = ("sqs", "ironmq", "mongo", "disque")
#: Plugin packages of the repo the qhive venv gets, besides core and the Django app.
QHIVE_PLUGINS = [REPO_DIR / "plugins" / part for part in (
    "brokers/orm", "result_stores/orm", "result_stores/cache",  # qhive-django needs these
    "clients/redis", "brokers/redis", "result_stores/redis",
    *(f"brokers/{name}" for name in TEST_SERVER_BROKERS))]
AWS_KEYS = {"aws_region": "us-east-1", "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing"}

# What each of the two looks like inside the project.
FLAVOURS = {
    "qhive": {
        "apps": ["qhive_django", "qhive_broker_orm", "qhive_store_orm"],
        "tasks_module": "qhive_django.tasks",
        "task_model": "qhive_store_orm.models",
        "key_packages": ["qhive", "qhive-django", "qhive-broker-orm", "qhive-store-orm",
                         "qhive-broker-redis", "qhive-redis-client", "qhive-store-redis",
                         "qhive-broker-sqs",
                         "qhive-broker-ironmq", "qhive-broker-mongo", "qhive-broker-disque",
                         "Django", "psycopg", "redis", "boto3", "iron-mq", "pymongo"],
        "defaults": "bulk=1, poll=0.2, guard_cycle=0.5, recycle=500, queue_limit=50 per "
                    "worker; each worker takes its own tasks in batches (about 50 ms of "
                    "work), saves and acknowledges them in batches",
    },
    "django-q2": {
        "apps": ["django_q"],
        "tasks_module": "django_q.tasks",
        "task_model": "django_q.models",
        "key_packages": ["django-q2", "Django", "django-picklefield", "psycopg", "redis",
                         "boto3", "iron-mq", "pymongo"],
        "defaults": "bulk=1, poll=0.2, guard_cycle=0.5, recycle=500, queue_limit=workers²=4, "
                    "fork start method; one result saved per query by the monitor process",
    },
}


def _qhive_requirements() -> list[str]:
    reqs = [f"-e {REPO_DIR / 'core'}", f"-e {REPO_DIR / 'django_integration'}"]
    return [*reqs, *(f"-e {path}" for path in QHIVE_PLUGINS), DJANGO, PSYCOPG]


#: ``--baseline REF`` (bench/run.py sets it): qhive as committed at REF, measured next to
#: the working tree in the same run, for before/after figures of one change.
BASELINE = os.environ.get("QHIVE_BENCH_BASELINE")


def _baseline_tree(ref: str) -> Path:
    """qhive at ``ref``, exported with ``git archive`` into bench/.envs/src/<commit>/."""
    commit = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "--short=12", ref],
                            capture_output=True, text=True, check=True).stdout.strip()
    tree = REPO_DIR / "bench" / ".envs" / "src" / commit
    if not tree.exists():  # extracted beside it and renamed: never half a tree
        partial = tree.with_name(f"{commit}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO_DIR), "archive", commit, "core",
                                  "django_integration", "plugins"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(partial)], input=archive, check=True)
        partial.rename(tree)
    return tree


def _baseline_requirements(tree: Path) -> list[str]:
    """qhive of a :func:`_baseline_tree`, installed from there (not editable: that tree
    never changes)."""
    plugins = [tree / path.relative_to(REPO_DIR) for path in QHIVE_PLUGINS]
    return [str(tree / "core"), str(tree / "django_integration"),
            *(str(path) for path in plugins if path.exists()), DJANGO, PSYCOPG]


REQUIREMENTS = {
    "qhive": _qhive_requirements(),
    # Latest Django Q2 from PyPI, with the clients of its brokers (redis without hiredis:
    # not a default).
    "django-q2": ["django-q2", DJANGO, PSYCOPG, "redis", "boto3", "iron-mq", "pymongo"],
}

MANAGE_PY = '''\
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproj.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
'''

# The same three tasks in every system (see bench/systems/workloads.py).
TASKS_PY = '''\
import time


def add(a, b):
    return a + b


def sleep_ms(ms):
    time.sleep(ms / 1000)
    return ms


def size(data):
    return len(data)
'''

SETTINGS_PY = '''\
"""Generated by bench/systems/djangoq.py for {label}."""
import os

SECRET_KEY = "qhive-bench-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = {apps!r}
DATABASES = {{"default": {database!r}}}
# prepare() migrates a template database first: it names it here.
DATABASES["default"]["NAME"] = os.environ.get("BENCH_DB_NAME", DATABASES["default"]["NAME"])
Q_CLUSTER = {q_cluster!r}
# The scaling curves of bench/run.py start the cluster with other worker counts.
Q_CLUSTER["workers"] = int(os.environ.get("BENCH_WORKERS", Q_CLUSTER["workers"]))
'''

CLIENT_PY = '''\
"""Generated by bench/systems/djangoq.py: runs one workload (see workloads.py)."""
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproj.settings")
import django

django.setup()

import workloads
from benchproj.tasks import add, size, sleep_ms
from {tasks_module} import async_task
{lookups}

TASKS = {{"add": add, "sleep_ms": sleep_ms, "size": size}}


def enqueue(i):
    name, args = workloads.task_call(i)
    return async_task(TASKS[name], *args)


def _waiting_store():
    """qhive's result store when it is woken by a notification (``ResultStore.wait``
    overridden: Redis, PostgreSQL); None for Django Q2, older qhive and polling stores."""
    try:
        from qhive.contracts import ResultStore
        from qhive_django.conf import get_pipeline
    except ImportError:
        return None
    store = get_pipeline().result_store
    if getattr(type(store), "wait", None) is getattr(ResultStore, "wait", None):
        return None
    return store


if _waiting_store() is not None:
    from qhive_django.tasks import fetch

    def wait_done(task_id):  # result(wait=): one look, then woken when it is saved
        return fetch(task_id, wait=workloads.ROUND_TRIP_TIMEOUT * 1000) is not None
else:
    wait_done = None  # polled every 5 ms, like the peers


sys.exit(workloads.main(enqueue=enqueue, is_done=is_done, count=count, exact=exact,
                        wait_done=wait_done))
'''

# Results in the Django database: the same query for both systems, so that the client's
# polling costs the same.
ORM_LOOKUPS = '''\
from {task_model} import Task


def is_done(task_id):
    return Task.objects.filter(pk=task_id).exists()


def count():
    return Task.objects.count()


exact = None  # count() is exact
'''

# Results in qhive's Redis result store, on a Redis database of its own.
REDIS_STORE_LOOKUPS = '''\
import redis
from qhive_django.conf import get_pipeline

store = get_pipeline().result_store  # the cluster's RedisResultStore
keys = redis.Redis(**{store_redis!r})  # the store's database: nothing else is in it
RESULT_KEYS = "qhive:{{{name}}}:result:*"  # one hash per result (the store's README)


def is_done(task_id):
    return store.get(task_id) is not None  # one HMGET (then the signature is checked)


def count():
    # One DBSIZE. The save script writes 2 keys per result: its hash and the index of the
    # task's name (a name is 4 words from the task id: 2**32 names). Rounded up, the count
    # stays exact when two of the results share a name (about once in 800 drains of 5,000).
    return (keys.dbsize() + 1) // 2


def exact():
    # After the timed part only: the result hashes one by one (a SCAN may repeat a key).
    return len(set(keys.scan_iter(match=RESULT_KEYS, count=1000)))
'''


class DjangoQueue(System):
    """qhive or Django Q2 (``name``) on ``broker``: ``orm-sqlite``, ``orm-postgres``, ``redis``;
    ``qhive@REF`` is qhive at a git ref (``--baseline``)."""

    def __init__(self, name: str, broker: str, skip: str | None = None) -> None:
        self.name, self.broker, self.skip = name, broker, skip
        kind, _, ref = name.partition("@")
        self.flavour = FLAVOURS[kind]
        if ref:
            tree = _baseline_tree(ref)
            self.requirements = _baseline_requirements(tree)
            if broker == REDIS_STORE and not (tree / "plugins/result_stores/redis").exists():
                self.skip = f"{ref} has no Redis result store (plugins/result_stores/redis)"
        else:
            self.requirements = REQUIREMENTS[name]
        self.store_db = STORE_DBS.get(name, BASELINE_STORE_DB)
        self.venv_name = name
        self.key_packages = self.flavour["key_packages"]
        self.slug = f"{name}_{broker}".replace("-", "_")
        self._template_ready = False
        self.settings_text = self._describe(None)

    @property
    def needs(self) -> set[str]:
        if self.broker == REDIS_STORE:  # results in Redis; the Django database on SQLite
            return {"redis"}
        # Redis and the test-server brokers: results in PostgreSQL.
        if self.broker == "redis" or self.broker in TEST_SERVER_BROKERS:
            return {self.broker, "postgres"}
        return super().needs

    @property
    def on_sqlite(self) -> bool:
        """Whether the Django database is SQLite (else PostgreSQL)."""
        return self.broker in ("orm-sqlite", REDIS_STORE)

    # ------------------------------------------------------------------ settings
    def _redis_address(self, services: Services | None) -> dict:
        url = urlparse((services.redis_url if services else None) or "redis://?:0/0")
        return {"host": url.hostname, "port": url.port, "db": int(url.path.strip("/") or 0)}

    def _store_redis(self, services: Services | None) -> dict:
        """Where the Redis result store keeps the results: a database of its own."""
        return {**self._redis_address(services), "db": self.store_db}

    def _database(self, workdir: Path | None, services: Services | None) -> dict:
        if self.on_sqlite:
            return {"ENGINE": "django.db.backends.sqlite3",
                    "NAME": str((workdir or Path(".")) / "db.sqlite3"),
                    "CONN_MAX_AGE": 60,
                    "OPTIONS": {"timeout": 30, "init_command":
                                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}}
        pg = (services.postgres if services else None) or {"host": "?", "port": 0, "user": "?"}
        return {"ENGINE": "django.db.backends.postgresql", "NAME": f"qhive_bench_{self.slug}",
                "HOST": pg["host"], "PORT": str(pg["port"]), "USER": pg["user"],
                "PASSWORD": pg.get("password") or "", "CONN_MAX_AGE": 60}

    def _q_cluster(self, services: Services | None) -> dict:
        q_cluster = dict(COMMON_Q_CLUSTER)
        port = (services.test_servers.get(self.broker) if services else None) or 0
        if self.broker.startswith("orm"):
            q_cluster["orm"] = "default"
        elif self.broker in ("redis", REDIS_STORE):
            q_cluster["redis"] = self._redis_address(services)
            if self.broker == REDIS_STORE:
                q_cluster["result_store"] = "redis"
                q_cluster["result_store_options"] = {"redis": self._store_redis(services)}
        elif self.broker == "sqs":  # the endpoint: $AWS_ENDPOINT_URL_SQS (see _env)
            q_cluster["sqs"] = dict(AWS_KEYS)
        elif self.broker == "ironmq":
            q_cluster["iron_mq"] = {"host": "127.0.0.1", "port": port, "protocol": "http",
                                    "token": ironmq_emulator.TOKEN,
                                    "project_id": ironmq_emulator.PROJECT_ID}
        elif self.broker == "mongo":
            q_cluster["mongo"] = {"host": f"mongodb://127.0.0.1:{port}/"}
            q_cluster["mongo_db"] = CLUSTER_NAME
        else:
            q_cluster["disque_nodes"] = [f"127.0.0.1:{port}"]
        return q_cluster

    def _describe(self, services: Services | None) -> str:
        db = self._database(None, services)
        if self.broker == "orm-sqlite":
            where = "ORM broker and results on SQLite (WAL, synchronous=NORMAL, timeout=30)"
        elif self.broker == "orm-postgres":
            where = "ORM broker and results on PostgreSQL"
        elif self.broker == "redis":
            where = "Redis broker; results on PostgreSQL"
        elif self.broker == REDIS_STORE:
            where = (
                f"Redis broker; results in qhive's Redis result store (qhive-store-redis) on "
                f"Redis database {self.store_db}, which holds nothing else, kept for ever (no "
                "`timeout`); the Django database (SQLite, as for orm-sqlite) holds no task "
                "and no result. The client looks for a result with the store's `get(id)` "
                "(one HMGET; the client then checks the signature) and counts the results "
                "with one DBSIZE of the store's database, halved and rounded up: the store's "
                "save script writes 2 keys per result, its hash and the index of the task's "
                "name (names are 4 words from the task id, so two results rarely share one; "
                "rounding up keeps one such pair exact). After each drain, outside the "
                "timed part, the client counts the result hashes one by one (SCAN) and "
                "fails the run if DBSIZE ÷ 2 over-counted")
        else:
            where = f"{self.broker} broker on a local test server; results on PostgreSQL"
        q_cluster = self._q_cluster(services)
        for key in ("redis", "iron_mq", "mongo", "disque_nodes"):  # ports: not settings
            if key in q_cluster:
                q_cluster[key] = "{host, port, db}" if key == "redis" else "{the test server}"
        if "result_store_options" in q_cluster:
            q_cluster["result_store_options"] = {"redis": f"{{host, port, db: {self.store_db}}}"}
        return (f"`Q_CLUSTER = {json.dumps(q_cluster)}`; {where}; "
                f"CONN_MAX_AGE={db['CONN_MAX_AGE']}; defaults otherwise: "
                f"{self.flavour['defaults']}. Worker: `manage.py qcluster`.")

    # ------------------------------------------------------------------ the interface
    def prepare(self, workdir: Path, services: Services) -> None:
        flavour = self.flavour
        (workdir / "benchproj").mkdir(parents=True, exist_ok=True)
        files = {
            "manage.py": MANAGE_PY,
            "benchproj/__init__.py": "",
            "benchproj/tasks.py": TASKS_PY,
            "benchproj/settings.py": SETTINGS_PY.format(
                label=self.label, apps=["django.contrib.contenttypes", *flavour["apps"]],
                database=self._database(workdir, services), q_cluster=self._q_cluster(services)),
            "client.py": CLIENT_PY.format(tasks_module=flavour["tasks_module"],
                                          lookups=self._lookups(services)),
        }
        for name, text in files.items():
            path = workdir / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        shutil.copyfile(WORKLOADS_FILE, workdir / "workloads.py")
        self.settings_text = self._describe(services)
        if self.on_sqlite:
            self._fresh_sqlite(workdir)
        else:
            self._fresh_postgres(workdir, services)
        if self.broker in ("redis", REDIS_STORE):
            self._purge_redis(services)
        elif self.broker in TEST_SERVER_BROKERS:
            PURGE[self.broker](services.test_servers[self.broker])

    def worker_command(self, workdir: Path, services: Services,
                       workers: int = 2) -> tuple[list[str], dict[str, str]]:
        return ([str(self.python), "manage.py", "qcluster"],
                self._env(services, BENCH_WORKERS=str(workers)))

    def client_command(self, workdir: Path, services: Services, workload: str,
                       n: int) -> tuple[list[str], dict[str, str]]:
        return [str(self.python), "client.py", workload, str(n)], self._env(services)

    # ------------------------------------------------------------------ helpers
    def _lookups(self, services: Services) -> str:
        """The client's ``is_done``, ``count`` and ``exact`` (see workloads.py)."""
        if self.broker == REDIS_STORE:
            return REDIS_STORE_LOOKUPS.format(store_redis=self._store_redis(services),
                                              name=CLUSTER_NAME)
        return ORM_LOOKUPS.format(task_model=self.flavour["task_model"])

    def _env(self, services: Services | None = None, **extra: str) -> dict[str, str]:
        env = {"DJANGO_SETTINGS_MODULE": "benchproj.settings", **extra}
        if self.broker == "sqs" and services is not None:
            # Django Q2 hands Q_CLUSTER["sqs"] to boto3.Session, which takes no endpoint:
            # botocore's environment variable points both at the test server.
            env["AWS_ENDPOINT_URL_SQS"] = f"http://127.0.0.1:{services.test_servers['sqs']}"
        return env

    def _migrate(self, workdir: Path, db_name: str) -> None:
        done = subprocess.run([str(self.python), "manage.py", "migrate", "--verbosity", "0"],
                              cwd=workdir, env={**_clean_env(), **self._env(BENCH_DB_NAME=db_name)},
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"migrate failed for {self.label}:\n{done.stdout}{done.stderr}")

    def _fresh_sqlite(self, workdir: Path) -> None:
        template = workdir / "template.sqlite3"
        if not self._template_ready:
            for path in workdir.glob("template.sqlite3*"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            self._migrate(workdir, str(template))
            self._template_ready = True
        for path in workdir.glob("db.sqlite3*"):  # with qhive's doorbell, db.sqlite3.qhive/
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        shutil.copyfile(template, workdir / "db.sqlite3")

    def _fresh_postgres(self, workdir: Path, services: Services) -> None:
        db = f"qhive_bench_{self.slug}"
        template = f"{db}_tpl"
        with _pg(services) as conn:
            if not self._template_ready:
                conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{template}"')
                self._migrate(workdir, template)
                self._template_ready = True
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{db}" TEMPLATE "{template}"')

    def _purge_redis(self, services: Services) -> None:
        import redis

        client = redis.Redis.from_url(services.redis_url)
        for pattern in (f"django_q:{CLUSTER_NAME}*", f"qhive*{CLUSTER_NAME}*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
        client.close()
        if self.broker == REDIS_STORE:  # the store's database is its own: emptied whole
            store = redis.Redis(**self._store_redis(services))
            store.flushdb()
            store.close()


def _purge_sqs(port: int) -> None:
    import boto3

    client = boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{port}",
                          region_name=AWS_KEYS["aws_region"],
                          aws_access_key_id=AWS_KEYS["aws_access_key_id"],
                          aws_secret_access_key=AWS_KEYS["aws_secret_access_key"])
    for url in client.list_queues().get("QueueUrls", []):
        client.delete_queue(QueueUrl=url)


def _purge_ironmq(port: int) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/3/projects/{ironmq_emulator.PROJECT_ID}/queues/"
        f"{CLUSTER_NAME}", method="DELETE",
        headers={"Authorization": f"OAuth {ironmq_emulator.TOKEN}"})
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as exc:
        if exc.code != 404:  # no such queue yet: nothing to purge
            raise


def _purge_mongo(port: int) -> None:
    import pymongo

    with pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/") as client:
        client.drop_database(CLUSTER_NAME)


def _purge_disque(port: int) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, protocol=2)  # Disque has no HELLO
    client.execute_command("DEBUG", "FLUSHALL")
    client.close()


#: Empties a test server before a run (a fresh queue, as prepare() promises).
PURGE = {"sqs": _purge_sqs, "ironmq": _purge_ironmq, "mongo": _purge_mongo,
         "disque": _purge_disque}


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV")}


def _pg(services: Services):
    import psycopg

    pg = services.postgres
    return psycopg.connect(host=pg["host"], port=pg["port"], user=pg["user"],
                           password=pg.get("password") or None, dbname="postgres",
                           autocommit=True)


SYSTEMS = [
    DjangoQueue("qhive", "orm-sqlite"),
    DjangoQueue("qhive", "orm-postgres"),
    # Django Q2's "redis" key selects qhive's Redis broker too; results in PostgreSQL.
    DjangoQueue("qhive", "redis"),
    # The same broker, results in qhive's Redis result store (Django Q2 has none).
    DjangoQueue("qhive", REDIS_STORE),
    DjangoQueue("django-q2", "orm-sqlite"),
    DjangoQueue("django-q2", "orm-postgres"),
    DjangoQueue("django-q2", "redis"),
    *(DjangoQueue("qhive", broker) for broker in TEST_SERVER_BROKERS),
    *(DjangoQueue("django-q2", broker) for broker in ("sqs", "ironmq", "mongo")),
    *(DjangoQueue(f"qhive@{BASELINE}", broker) for broker in ("orm-sqlite", "orm-postgres",
                                                              "redis", REDIS_STORE)
      if BASELINE),
]
