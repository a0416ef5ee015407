"""Real ``manage.py qcluster`` processes on the Redis broker (results in the ORM store):
a 5000-task drain, ``kill -9`` of a worker and then of the whole cluster mid-load,
and Redis itself stopped for 10 s under load. Nothing may be lost: every enqueued
task ends with exactly one successful result.

The drain uses the shared Redis (``$QHIVE_TEST_REDIS_*``; its own queue name); the crash and outage
tests use a Redis of their own (``RedisServer``), with an append-only file so that
stopping it keeps what it holds.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from qhive_testkit.outcomes import enqueue_many, get_broker, rows_of, successes, tasks_of
from qhive_testkit.qcluster import wait_until
from qhive_testkit.services import redis_url, require

T = "qhive_testkit.tasks"


def test_drains_5000_tasks_with_one_correct_result_each(cluster_settings, qcluster):
    require("redis")
    q = cluster_settings(redis=redis_url())
    cluster = qcluster(q)
    assert "broker redis" in cluster.log()
    ids = enqueue_many(f"{T}.add", [(n, 5000) for n in range(5000)])
    wait_until(lambda: rows_of(q) >= 5000, within=300, what="5000 results")
    found = {t.id: (t.result, t.success, t.attempt_count) for t in tasks_of(q)}
    assert len(found) == 5000
    wrong = {i: found[i] for i, args in ids.items() if found.get(i) != (sum(args), True, 1)}
    assert not wrong, f"{len(wrong)} tasks without their one correct result, e.g. " \
                      f"{list(wrong.items())[:3]}"
    assert cluster.stop() == 0
    assert "stopped (5000 processed, 0 failed)" in cluster.log()
    from qhive_django.tasks import queue_size

    assert queue_size() == 0 and get_broker().lock_size() == 0


def test_kill_9_of_a_worker_then_of_the_cluster_loses_nothing(cluster_settings, qcluster,
                                                              redis_server):
    q = cluster_settings(redis=redis_server.url, retry=3, workers=2)
    cluster = qcluster(q)
    ids = enqueue_many(f"{T}.sleep", [(0.01, n) for n in range(1500)])
    wait_until(lambda: rows_of(q) >= 100, within=120, what="100 results")
    stat = wait_until(lambda: cluster.stat(), what="the cluster's statistics")
    os.kill(stat.workers[0], signal.SIGKILL)  # a worker dies mid-task
    wait_until(lambda: rows_of(q) >= 400, within=120, what="400 results")
    cluster.kill()  # then the whole cluster: sentinel and workers, SIGKILL
    done_before = len(successes(q))
    broker = get_broker()
    in_flight = broker.lock_size()
    print(f"\nkilled the cluster with {done_before} of {len(ids)} results saved, "
          f"{in_flight} tasks taken but not acknowledged, {broker.queue_size()} waiting")
    assert done_before < len(ids), "the cluster was killed mid-load"

    second = qcluster(q)
    wait_until(lambda: len(successes(q)) >= len(ids), within=300, what="every result")
    done = successes(q)
    print(f"after the restart: {len(done)} tasks with one successful result each, "
          f"of {len(ids)} enqueued")
    assert done == set(ids), "every enqueued task has its successful result"
    assert rows_of(q) == len(ids), "one result per task: none extra, none failed"
    assert second.stop() == 0  # results are saved before their messages are acknowledged
    assert broker.queue_size() == 0 and broker.lock_size() == 0


def test_redis_stopped_for_10_seconds_under_load(cluster_settings, qcluster, redis_server):
    q = cluster_settings(redis=redis_server.url, workers=2)
    cluster = qcluster(q)
    ids = enqueue_many(f"{T}.sleep", [(0.01, n) for n in range(1500)])
    wait_until(lambda: rows_of(q) >= 100, within=120, what="100 results")
    redis_server.stop()
    stopped_at = rows_of(q)
    time.sleep(10)
    assert cluster.process.poll() is None, "the cluster survives the outage"
    redis_server.start()
    wait_until(lambda: len(successes(q)) >= len(ids), within=300, what="every result")
    print(f"\nRedis stopped with {stopped_at} results saved; after it came back: "
          f"{len(successes(q))} of {len(ids)}")
    assert successes(q) == set(ids) and rows_of(q) == len(ids)
    log = cluster.log()
    # Noticed by a worker taking tasks, or acknowledging them (it then takes nothing
    # until the broker is back).
    assert "taking tasks: broker error" in log or "saving or acknowledging" in log, \
        "the outage was noticed and logged"
    assert log.count("broker reachable again") + log.count("result store reachable again") \
        >= 1, "the recovery was logged"
    assert cluster.stop() == 0
    broker = get_broker()
    assert broker.queue_size() == 0 and broker.lock_size() == 0


@pytest.fixture(autouse=True)
def _fresh_pipelines():
    """Each test's Q_CLUSTER has its own Redis: forget brokers built for another."""
    from qhive_django.conf import reset

    yield
    reset()
