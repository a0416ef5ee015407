"""``qhive.cluster.Stat``: Django Q's fields, JSON storage, and the stats a running
cluster saves through its broker (the in-memory broker here; the ORM and Redis
brokers are covered by the Django app's tests)."""

import json
import os
import threading
import time
import uuid

import pytest
from qhive.builtin.memory import MemoryBroker
from qhive.cluster import Cluster, Stat
from qhive.cluster.stat import IDLE, STARTING, STOPPED, WORKING
from qhive.config import Config
from qhive.contracts import Broker


def project():
    return f"p{uuid.uuid4().hex[:10]}"


def signed_broker(queue="q", **settings):
    """A memory broker whose config carries a secret key: stats are signed with it."""
    return MemoryBroker(queue, config=Config.from_dict(settings, secret_key="stat-secret"))


def make(**fields):
    values = {"cluster_id": uuid.uuid4().hex, "name": "default", "host": "h1", "pid": 321}
    return Stat(**{**values, **fields})


def test_has_django_q_fields_with_thread_pids_of_the_sentinel():
    stat = make(workers=[5, 6])
    assert (stat.status, stat.reincarnations, stat.task_q_size, stat.done_q_size) == \
        (STARTING, 0, 0, 0)
    # Django Q's pusher and monitor pids are the sentinel's here.
    assert (stat.sentinel, stat.pusher, stat.monitor) == (321, 321, 321)
    assert stat.workers == [5, 6]
    assert stat.short_id == stat.cluster_id[-8:]


def test_uptime_is_measured_on_the_clusters_clock():
    stat = make(tob=1000.0, timestamp=1090.5)
    assert stat.uptime() == 90.5
    assert make(tob=2000.0, timestamp=1000.0).uptime() == 0.0  # never negative


@pytest.mark.parametrize(("task_q", "done_q", "empty"), [(0, 0, True), (1, 0, False),
                                                         (0, 2, False)])
def test_empty_queues(task_q, done_q, empty):
    assert make(task_q_size=task_q, done_q_size=done_q).empty_queues() is empty


def test_json_round_trip():
    stat = make(status=WORKING, workers=[1, 2], reincarnations=3, task_q_size=4, done_q_size=5,
                busy=2, processed=10, failed=1, configured_workers=4, queue_limit=16)
    assert Stat.loads(stat.dumps()) == stat
    assert json.loads(stat.dumps())["pid"] == 321  # plain JSON, no pickle


def test_loads_a_stat_of_an_older_qhive_and_ignores_unknown_fields():
    old = {"cluster_id": "a" * 32, "name": "n", "host": "h", "pid": 77, "status": IDLE,
           "workers": [8], "from_the_future": 1}
    stat = Stat.loads(json.dumps(old).encode())
    assert (stat.sentinel, stat.pusher, stat.monitor, stat.configured_workers) == (77, 77, 77, 0)
    assert stat.queue_limit is None


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"name": "no id"}'])
def test_loads_refuses_what_is_not_a_stat(raw):
    with pytest.raises((ValueError, TypeError)):
        Stat.loads(raw)


def test_save_get_and_get_all_keep_projects_apart():
    broker, mine, other = signed_broker(), project(), project()
    root = make(name=mine, pid=2)
    alt = make(name="long", pid=1)  # an ALT cluster of the same project shows too
    stranger = make(name=other)
    for stat, where in ((root, mine), (alt, mine), (stranger, other)):
        stat.save(broker, where, ttl=60)
    assert [s.cluster_id for s in Stat.get_all(broker, mine)] == [alt.cluster_id,
                                                                 root.cluster_id]
    assert Stat.get(broker, mine, root.cluster_id) == root
    assert Stat.get(broker, mine, stranger.cluster_id) is None
    assert Stat.get(broker, mine, uuid.uuid4().hex) is None


def test_a_broken_stat_is_skipped_not_fatal():
    broker, mine = signed_broker(), project()
    good = make(name=mine)
    good.save(broker, mine, ttl=60)
    broker.set_stat(Stat.key_prefix(mine) + "broken", b"{not json", 60)
    assert [s.cluster_id for s in Stat.get_all(broker, mine)] == [good.cluster_id]
    assert Stat.get(broker, mine, "broken") is None


def test_a_stat_expires():
    broker, mine = signed_broker(), project()
    stat = make(name=mine)
    stat.save(broker, mine, ttl=0.05)
    deadline = time.monotonic() + 10
    while Stat.get_all(broker, mine) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert Stat.get_all(broker, mine) == []
    assert Stat.get(broker, mine, stat.cluster_id) is None


class NoStatsBroker(Broker):
    """A broker without the ``stats`` capability."""

    def enqueue(self, payload):
        return "1"

    def dequeue(self, count=1, timeout=0.0):
        return []

    def acknowledge(self, ack_id):
        pass

    def queue_size(self):
        return 0

    def purge_queue(self):
        pass


def test_a_broker_without_stats_shows_no_clusters():
    assert Stat.get_all(NoStatsBroker(), "p") == []
    assert Stat.get(NoStatsBroker(), "p", "x") is None


def test_a_running_cluster_saves_what_qmonitor_shows(fresh_plugins):
    name = project()
    config = Config.from_dict({"name": name, "broker": "memory", "result_store": "memory",
                               "workers": 2, "queue_limit": 6, "guard_cycle": 0.1},
                              secret_key="stat-secret")
    cluster = Cluster(config)
    thread = threading.Thread(target=cluster.run, daemon=True)
    thread.start()
    try:
        assert cluster.started.wait(60), "cluster did not start"
        broker = signed_broker(name, name=name)  # the memory broker's stats are process-wide
        deadline = time.monotonic() + 30
        while not (stats := Stat.get_all(broker, name)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(stats) == 1
        stat = stats[0]
        assert (stat.cluster_id, stat.name, stat.status) == (cluster.cluster_id, name, IDLE)
        assert stat.pid == stat.sentinel == stat.pusher == stat.monitor == os.getpid()
        assert sorted(stat.workers) == sorted(w.process.pid for w in cluster.workers)
        assert (stat.configured_workers, stat.queue_limit) == (2, 6)
        assert stat.empty_queues() and stat.uptime() >= 0
    finally:
        cluster.stop()
        thread.join(60)
    assert not thread.is_alive(), "cluster did not stop"
    last = Stat.get(signed_broker(name, name=name), name, cluster.cluster_id)
    assert last is not None and (last.status, last.workers) == (STOPPED, [])
