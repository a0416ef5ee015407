"""``Q_CLUSTER["broker_class"]``, as in Django Q2 (issue 11, item 10): the class is
built with the queue and the config; Django Q's connection keys (``redis``, ...)
are handed to it when its ``__init__`` takes them, else it reads ``self.config``.

The third-party broker of tests/fixtures/qhive-broker-sqlitefile is imported from
its source folder: ``broker_class`` is a dotted path and needs no entry point.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from qhive.config import Config
from qhive.contracts import Broker
from qhive.errors import ConfigError
from qhive.pipeline import Pipeline
from qhive_testkit.qcluster import wait_until
from qhive_testkit.services import redis_address, redis_url, require

SQLITEFILE = Path(__file__).parent / "fixtures" / "qhive-broker-sqlitefile" / "src"
BROKER = "qhive_broker_sqlitefile.SqliteFileBroker"


@pytest.fixture
def sqlitefile(monkeypatch):
    """The fixture broker importable here."""
    monkeypatch.syspath_prepend(str(SQLITEFILE))


class ReadsItsConfig(Broker):
    """A memory-less broker that reads Django Q's ``redis`` key from its config, as a
    Django Q2 broker reads ``Conf.REDIS``; it only records what it was given."""

    def __init__(self, queue="default", *, config=None):
        super().__init__(queue, config=config)
        self.connection = self.config.redis

    enqueue = dequeue = acknowledge = queue_size = purge_queue = None


class TakesRedis(ReadsItsConfig):
    def __init__(self, queue="default", *, config=None, redis=None, django_redis=None):
        super().__init__(queue, config=config)
        self.given = {"redis": redis, "django_redis": django_redis}


class NotABroker:
    def __init__(self, list_key=None):  # a Django Q2 broker's signature
        self.list_key = list_key


def build(q_cluster: dict) -> Broker:
    config = Config.from_dict({"result_store": "memory", **q_cluster}, secret_key="k")
    return Pipeline(config).broker


def test_broker_class_is_not_an_option_and_connection_keys_are_offered():
    config = Config.from_dict({"broker_class": BROKER, "redis": {"host": "r"},
                               "mongo": {"host": "m"}, "mongo_db": "queues"})
    assert (config.broker, config.broker_options) == (BROKER, {})
    assert config.broker_connection_options() == {"redis": {"host": "r"},
                                                  "mongo": {"host": "m"}, "mongo_db": "queues"}
    assert Config.from_dict({"broker_class": BROKER}).broker_connection_options() == {}


def test_a_third_party_broker_class_runs_tasks(sqlitefile, fresh_plugins, tmp_path):
    config = Config.from_dict(
        {"name": "by-class", "broker_class": BROKER, "result_store": "memory",
         "broker_options": {"path": str(tmp_path / "q.db")}},
        secret_key="s3cret",
    )
    assert (config.broker, config.broker_selected_by) == (BROKER, "broker_class")
    pipeline = Pipeline(config)
    assert type(pipeline.broker).__name__ == "SqliteFileBroker"
    assert pipeline.broker.queue == "by-class" and pipeline.broker.config is config
    task_id = pipeline.enqueue("math.factorial", (5,))
    [result] = pipeline.drain()
    assert (result.id, result.success, result.result) == (task_id, True, 120)
    pipeline.close()


def test_connection_keys_go_to_a_class_that_takes_them(fresh_plugins):
    broker = build({"broker_class": f"{__name__}:TakesRedis", "redis": {"host": "r"},
                    "django_redis": "cache"})
    assert broker.given == {"redis": {"host": "r"}, "django_redis": "cache"}


def test_a_class_that_takes_none_reads_its_config(fresh_plugins):
    broker = build({"broker_class": f"{__name__}:ReadsItsConfig",
                    "redis": "redis://127.0.0.1:6379/3"})
    assert broker.connection == "redis://127.0.0.1:6379/3"


def test_explicit_broker_options_win_over_connection_keys(fresh_plugins):
    broker = build({"broker_class": f"{__name__}:TakesRedis", "redis": {"host": "r"},
                    "broker_options": {"redis": {"host": "explicit"}}})
    assert broker.given["redis"] == {"host": "explicit"}


def test_a_subclass_of_the_redis_broker_uses_q_cluster_redis(fresh_plugins):
    """What Django Q2 users write: a subclass of the Redis broker."""
    require("redis")
    broker = build({"name": f"redis-by-class-{uuid.uuid4().hex[:10]}", "redis": redis_url(),
                    "broker_class": "qhive_broker_redis.broker.RedisBroker"})
    assert type(broker).__name__ == "RedisBroker"
    assert broker.address == redis_address()
    broker.enqueue(b"x")
    assert broker.queue_size() == 1
    broker.delete_queue()
    broker.close()


def test_a_class_that_is_not_a_qhive_broker_is_named(fresh_plugins):
    with pytest.raises(ConfigError) as err:
        build({"broker_class": f"{__name__}:NotABroker"})
    assert "Q_CLUSTER['broker_class']" in str(err.value)
    assert "qhive.contracts.Broker" in str(err.value)


def test_manage_py_qcluster_runs_a_broker_class(cluster_settings, qcluster):
    """Django Q2's way: the class (here the Redis broker itself) takes Q_CLUSTER['redis'].

    (The sqlitefile fixture broker cannot run here: its one sqlite3 connection is
    used by the cluster's pusher and monitor threads.)"""
    from qhive_django.tasks import async_task, fetch

    require("redis")
    q = cluster_settings(broker_class="qhive_broker_redis.broker.RedisBroker",
                         redis=redis_url())
    cluster = qcluster(q)
    assert "broker qhive_broker_redis.broker.RedisBroker" in cluster.log()
    task_id = async_task("math.factorial", 6)
    task = wait_until(lambda: fetch(task_id), what="the result")
    assert (task.success, task.result) == (True, 720)
    assert cluster.stop() == 0
