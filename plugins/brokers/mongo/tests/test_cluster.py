"""Real ``manage.py qcluster`` processes on the MongoDB broker — the real pymongo client in
every process, over the wire to the MongoDB test server (``qhive_testkit.mongo_server``;
the real MongoDB at ``$QHIVE_TEST_MONGO_URL`` when that is set) — with results in the ORM
store: a 2,000-task drain, ``kill -9`` of the whole cluster mid-load, and the server
stopped for 10 s under load. Nothing may be lost: every task ends with exactly one
successful result.

The outage stops the server (SIGTERM) and starts it again on the same port with the data
it saved, as a restarted ``mongod`` comes back with its data files: every connection is
cut and pymongo must find the server again. Freezing it (SIGSTOP) instead would leave the
connections open and only delay the calls, testing no reconnection.
"""

from __future__ import annotations

import signal
import time

import pytest
from qhive_testkit.outcomes import (
    assert_one_success_each,
    enqueue_many,
    get_broker,
    report,
    rows_of,
    successes,
    wait_for_sums,
)
from qhive_testkit.qcluster import wait_until

T = "qhive_testkit.tasks"
#: The test server runs each command over every document of the collection (mongomock
#: has no indexes): claims of up to 10 tasks keep a 2,000-task queue draining in well
#: under a minute on 2 cores. Django Q2 recommends ``bulk`` for such brokers as well.
BULK = {"bulk": 10, "queue_limit": 20}


def on(url: str) -> dict:
    """The Q_CLUSTER keys of the MongoDB broker on the server at ``url``."""
    return {"mongo": {"host": url}, "mongo_db": "qhive_e2e"}


def test_drains_2000_tasks_with_one_correct_result_each(cluster_settings, qcluster,
                                                        mongo_test_server):
    q = cluster_settings(**on(mongo_test_server.url), **BULK)
    cluster = qcluster(q)
    assert "broker mongo" in cluster.log()
    wait_for_sums(q, enqueue_many(f"{T}.add", [(n, 2000) for n in range(2000)]))
    # The broker keeps the statistics: the web process finds the cluster's there.
    stat = wait_until(cluster.stat, within=60, what="the cluster's statistics")
    assert stat.name == q["name"]
    assert cluster.stop() == 0
    assert "stopped (2000 processed, 0 failed)" in cluster.log()
    broker = get_broker()
    assert broker.queue_size() == 0 and broker.lock_size() == 0


def test_kill_9_of_the_cluster_mid_load_loses_nothing(cluster_settings, qcluster,
                                                      mongo_test_server, tmp_path):
    path = tmp_path / "runs.jsonl"
    q = cluster_settings(**on(mongo_test_server.url), retry=3, **BULK)
    enqueued = 1000
    ids = enqueue_many(f"{T}.record", [(str(path), n) for n in range(enqueued)])
    cluster = qcluster(q)  # after the enqueue: it is surely killed mid-load
    wait_until(lambda: rows_of(q) >= 150, within=120, what="150 results")
    assert cluster.signal_group(signal.SIGKILL) == -signal.SIGKILL  # sentinel and workers
    broker = get_broker()
    done_before = len(successes(q))
    print(f"\nkilled the cluster (kill -9 of its process group) with {done_before} of "
          f"{enqueued} results saved, {broker.lock_size()} tasks leased, "
          f"{broker.queue_size()} waiting")
    assert done_before < enqueued, "the cluster was killed mid-load"

    second = qcluster(q)
    wait_until(lambda: len(successes(q)) >= enqueued, within=300, what="every result")
    lost, _ = report("kill -9 mid-load, then a restart", path, enqueued)
    assert lost == 0
    assert_one_success_each(q, ids)
    assert second.stop() == 0
    assert broker.queue_size() == 0 and broker.lock_size() == 0


def test_the_server_stopped_for_10_seconds_under_load(cluster_settings, qcluster,
                                                       mongo_test_server, mongo_server_process,
                                                       tmp_path):
    if not getattr(mongo_test_server, "restartable", False):
        pytest.skip("$QHIVE_TEST_MONGO_URL names a server this test cannot stop")
    path = tmp_path / "runs.jsonl"
    server = mongo_server_process
    q = cluster_settings(**on(server.url), **BULK)
    enqueued = 1000
    ids = enqueue_many(f"{T}.record", [(str(path), n) for n in range(enqueued)])
    cluster = qcluster(q)  # after the enqueue: the outage comes under load
    wait_until(lambda: rows_of(q) >= 100, within=120, what="100 results")
    server.stop()  # SIGTERM: it saves what it holds, as a mongod shut down cleanly
    stopped_at = rows_of(q)
    time.sleep(10)
    assert cluster.process.poll() is None, "the cluster survives the outage"
    server.start()  # the same port, the same data
    wait_until(lambda: len(successes(q)) >= enqueued, within=300, what="every result")
    lost, _ = report(f"the server stopped for 10 s with {stopped_at} results saved; after "
                     f"it came back", path, enqueued)
    assert lost == 0
    assert_one_success_each(q, ids)
    # The recovery is logged by the first call that works again, which may come after the
    # last result was saved (an acknowledgement still waiting for the server).
    cluster.wait_for_log("reachable again", within=60)
    log = cluster.log()
    # Noticed by a worker taking tasks, or acknowledging them (it
    # then holds the intake until the broker is back).
    assert "taking tasks: broker error" in log or "saving or acknowledging" in log, \
        "the outage was noticed and logged"
    assert "MongoDB broker:" in log, "the error names the broker"
    assert cluster.stop() == 0
    broker = get_broker()
    assert broker.queue_size() == 0 and broker.lock_size() == 0
