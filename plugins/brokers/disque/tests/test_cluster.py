"""Real ``manage.py qcluster`` processes on the Disque broker, results in the ORM store
(and the cluster's statistics there too: Disque keeps none): a 2000-task drain,
``kill -9`` of the whole cluster mid-load, and a Disque cluster of two joined nodes
losing the node the qcluster uses while it runs.

Nothing may be lost: every enqueued task ends with exactly one successful result. The
fault tests count executions with ``qhive_testkit.tasks.record`` (one line per run) and
print enqueued, completed, lost and run twice (see them with ``-s``).
"""

from __future__ import annotations

import re

from qhive_testkit.outcomes import (
    assert_one_success_each,
    enqueue_many,
    get_broker,
    report,
    runs,
    successes,
    wait_for_sums,
)
from qhive_testkit.qcluster import wait_until

T = "qhive_testkit.tasks"


def test_drains_2000_tasks_with_one_correct_result_each(cluster_settings, qcluster,
                                                        disque_server):
    q = cluster_settings(disque_nodes=[disque_server.address])
    cluster = qcluster(q)
    assert "broker disque" in cluster.log()
    wait_for_sums(q, enqueue_many(f"{T}.add", [(n, 2000) for n in range(2000)]))
    assert cluster.stat() is not None, "the cluster's statistics are in the result store"
    assert cluster.stop() == 0
    assert "stopped (2000 processed, 0 failed)" in cluster.log()
    broker = get_broker()
    assert broker.queue_size() == 0 and broker.lock_size() == 0


def test_kill_9_of_the_whole_cluster_mid_load_loses_nothing(cluster_settings, qcluster,
                                                            disque_server, tmp_path):
    # retry: longer than the look at what is in flight below takes
    q = cluster_settings(disque_nodes=[disque_server.address], retry=5)
    path = tmp_path / "runs.jsonl"
    cluster = qcluster(q)
    ids = enqueue_many(f"{T}.record", [(str(path), n) for n in range(1500)])
    wait_until(lambda: len(runs(path)) >= 300, within=120, what="300 tasks run")
    cluster.kill()  # sentinel and workers, SIGKILL
    broker = get_broker()
    in_flight = broker.lock_size()
    ran_before = len(runs(path))
    print(f"\nkilled the cluster after {ran_before} of {len(ids)} tasks ran; "
          f"{in_flight} taken but not acknowledged, {broker.queue_size()} waiting")
    assert ran_before < len(ids), "the cluster was killed mid-load"

    second = qcluster(q)
    wait_until(lambda: len(successes(q)) >= len(ids), within=300, what="every result")
    lost, twice = report("kill -9 of the cluster, then a restart", path, len(ids))
    assert lost == 0
    assert twice <= in_flight, "only tasks the killed cluster held may run twice"
    assert_one_success_each(q, ids)
    assert second.stop() == 0  # results are saved before their messages are acknowledged
    assert broker.queue_size() == 0 and broker.lock_size() == 0


def test_the_node_in_use_dies_the_cluster_carries_on_with_the_other(
        cluster_settings, qcluster, disque_servers, tmp_path):
    first, second = disque_servers(), disque_servers()
    first.meet(second)  # one Disque cluster: every job has a copy on both nodes
    by_address = {first.address: first, second.address: second}
    q = cluster_settings(disque_nodes=[first.address, second.address], retry=2)
    path = tmp_path / "runs.jsonl"
    ids = enqueue_many(f"{T}.record", [(str(path), n) for n in range(1500)])
    cluster = qcluster(q)
    used = re.search(r"using the Disque node (\S+) \(of 2", cluster.log())
    assert used, cluster.log()
    in_use = by_address.pop(used[1])
    [other] = by_address.values()
    wait_until(lambda: len(runs(path)) >= 300, within=120, what="300 tasks run")
    in_use.kill()  # the node dies with what it holds in memory
    ran_before = len(runs(path))
    assert ran_before < len(ids), "the node died mid-load"

    wait_until(lambda: len(successes(q)) >= len(ids), within=300, what="every result")
    lost, _ = report(f"the Disque node in use killed after {ran_before} tasks ran", path,
                     len(ids))
    assert lost == 0
    assert_one_success_each(q, ids)
    assert cluster.process.poll() is None, "the cluster survives the loss of its node"
    assert f"using the Disque node {other.address} now" in cluster.log()
    assert get_broker().queue_size() == 0
    assert cluster.stop() == 0
