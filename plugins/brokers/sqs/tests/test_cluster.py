"""Real ``manage.py qcluster`` processes on the SQS broker (moto's server over HTTP),
results in the ORM store: a 2000-task drain with ``qinfo`` and ``qmonitor`` showing the
cluster (its statistics in the result store: SQS has no place for them), ``kill -9`` of
the whole cluster mid-load, and a cluster started before its SQS endpoint is up.

Nothing may be lost: every enqueued task ends with exactly one successful result.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time

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
from qhive_testkit.services import MotoServer

T = "qhive_testkit.tasks"


# --------------------------------------------------------------------------- helpers


def manage(django_project, q: dict, *args: str) -> str:
    done = subprocess.run(django_project.manage(*args), env=django_project.env(q),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def monitor_screen(django_project, q: dict) -> str:
    """What ``qmonitor`` prints without a terminal in about 3 s (then SIGTERM)."""
    process = subprocess.Popen(django_project.manage("qmonitor"), env=django_project.env(q),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


# --------------------------------------------------------------------------- tests


def test_drains_2000_tasks_with_one_correct_result_each(cluster_settings, qcluster,
                                                       django_project, moto_server):
    from qhive_django.monitor import Stat

    q = cluster_settings(sqs=moto_server.sqs_options(), bulk=10, queue_limit=20)
    cluster = qcluster(q)
    assert "broker sqs" in cluster.log()
    wait_for_sums(q, enqueue_many(f"{T}.add", [(n, 2000) for n in range(2000)]))

    # SQS keeps no statistics: the cluster keeps them in the result store, and the
    # monitoring commands find them there.
    assert "keeps its statistics in the result store (OrmResultStore" in cluster.log()
    [stat] = wait_until(Stat.get_all, within=60, what="the cluster's statistics")
    assert stat.pid == cluster.pid
    summary = manage(django_project, q, "qinfo")
    assert re.search(r"^Clusters\s+1\s+Workers\s+2\s", summary, re.M), summary
    assert "Amazon SQS (us-east-1, http://127.0.0.1:" in summary, summary
    screen = monitor_screen(django_project, q)
    assert stat.cluster_id[-8:] in screen and q["name"] in screen, screen
    assert "Amazon SQS (us-east-1, http://127.0.0.1:" in screen, screen

    assert cluster.stop() == 0
    assert "stopped (2000 processed, 0 failed)" in cluster.log()
    broker = get_broker()
    assert broker.queue_size() == 0 and broker.lock_size() == 0
    broker.delete_queue()


def test_kill_9_of_the_whole_cluster_mid_load_loses_nothing(cluster_settings, qcluster,
                                                          moto_server, tmp_path):
    path = tmp_path / "runs.jsonl"
    q = cluster_settings(sqs=moto_server.sqs_options(), retry=3, bulk=10, queue_limit=20)
    # Queued before the cluster starts, so that it is killed with work waiting. (Not
    # more: moto's ReceiveMessage scans the whole queue a few times per message.)
    ids = enqueue_many(f"{T}.record", [(str(path), n) for n in range(400)])
    cluster = qcluster(q)
    wait_until(lambda: rows_of(q) >= 100, within=120, what="100 results")
    cluster.signal_group(signal.SIGKILL)  # kill -9 of the process group: sentinel and workers
    done_before = len(successes(q))
    broker = get_broker()
    in_flight, waiting = broker.lock_size(), broker.queue_size()
    print(f"\nkilled the cluster with {done_before} of {len(ids)} results saved, "
          f"{in_flight} tasks taken but not acknowledged, {waiting} waiting")
    assert done_before < len(ids), "the cluster was killed mid-load"

    second = qcluster(q)
    wait_until(lambda: len(successes(q)) >= len(ids), within=300, what="every result")
    assert second.stop() == 0
    lost, _ = report("kill -9 of the cluster, then a restart", path, len(ids))
    assert lost == 0
    assert_one_success_each(q, ids)
    assert broker.queue_size() == 0 and broker.lock_size() == 0
    broker.delete_queue()


def test_a_cluster_started_before_its_endpoint_waits_for_it(cluster_settings, qcluster,
                                                            tmp_path):
    server = MotoServer(tmp_path)  # its port chosen, not started yet
    q = cluster_settings(sqs=server.sqs_options())
    cluster = qcluster(q)
    cluster.wait_for_log("broker cannot be reached yet")
    assert f"cannot reach SQS at {server.url}" in cluster.log()
    server.start()
    try:
        ids = enqueue_many(f"{T}.add", [(n, 1) for n in range(20)])
        wait_until(lambda: len(successes(q)) >= 20, within=120, what="20 results")
        assert successes(q) == set(ids)
        assert cluster.process.poll() is None, "the cluster survived the outage"
        assert "broker reachable again" in cluster.log()
        assert cluster.stop() == 0
    finally:
        server.stop()


def test_a_queue_that_must_exist_and_does_not_stops_the_start(cluster_settings, qcluster,
                                                              moto_server):
    q = cluster_settings(sqs=moto_server.sqs_options(create_queue=False))
    cluster = qcluster(q, wait=False)
    assert cluster.wait(120) != 0
    log = cluster.log()
    assert "Q_CLUSTER['sqs']['create_queue'] is False" in log, log
    assert f"aws sqs create-queue --queue-name {q['name']}`" in log, log
