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
import uuid

import pytest
from qhive_testkit.outcomes import enqueue_many, rows_of, runs, successes, tasks_of
from qhive_testkit.qcluster import wait_until
from qhive_testkit.services import MotoServer

T = "qhive_testkit.tasks"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def cluster_settings(django_project, moto_server):
    """``cluster_settings(server=moto_server, **settings)``: ``Q_CLUSTER`` on the SQS
    broker for this test (its own name: its own queue and results), results in the
    ORM store on the default database; applied on the web side too."""
    from django.test import override_settings

    overrides = []

    def apply(server: MotoServer = moto_server, **settings) -> dict:
        q = {"name": f"sqs-e2e-{uuid.uuid4().hex[:10]}", "sqs": server.sqs_options(),
             "result_store_options": {"database": "default"}, "workers": 2,
             "save_limit": 0, "guard_cycle": 0.2, "poll": 0.05, **settings}
        override = override_settings(Q_CLUSTER=q)
        override.enable()
        overrides.append(override)
        return q

    yield apply
    for override in reversed(overrides):
        override.disable()
    # qhive_django caches pipelines by config: the next test's broker is its own
    from qhive_django.conf import reset

    reset()




# --------------------------------------------------------------------------- helpers


def broker():
    from qhive_django.conf import get_pipeline

    return get_pipeline().broker


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
                                                       django_project):
    from qhive_django.monitor import Stat

    q = cluster_settings(bulk=10, queue_limit=20)
    cluster = qcluster(q)
    assert "broker sqs" in cluster.log()
    ids = enqueue_many(f"{T}.add", [(n, 2000) for n in range(2000)])
    wait_until(lambda: rows_of(q) >= 2000, within=300, what="2000 results")
    found = {t.id: (t.result, t.success, t.attempt_count) for t in tasks_of(q)}
    assert len(found) == 2000
    wrong = {i: found.get(i) for i, args in ids.items() if found.get(i) != (sum(args), True, 1)}
    assert not wrong, f"{len(wrong)} tasks without their one correct result, e.g. " \
                      f"{list(wrong.items())[:3]}"

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
    assert broker().queue_size() == 0 and broker().lock_size() == 0
    broker().delete_queue()


def test_kill_9_of_the_whole_cluster_mid_load_loses_nothing(cluster_settings, qcluster,
                                                          tmp_path):
    path = tmp_path / "runs.jsonl"
    q = cluster_settings(retry=3, bulk=10, queue_limit=20)
    # Queued before the cluster starts, so that it is killed with work waiting. (Not
    # more: moto's ReceiveMessage scans the whole queue a few times per message.)
    ids = enqueue_many(f"{T}.record", [(str(path), n) for n in range(400)])
    cluster = qcluster(q)
    wait_until(lambda: rows_of(q) >= 100, within=120, what="100 results")
    cluster.signal_group(signal.SIGKILL)  # kill -9 of the process group: sentinel and workers
    done_before = len(successes(q))
    in_flight, waiting = broker().lock_size(), broker().queue_size()
    print(f"\nkilled the cluster with {done_before} of {len(ids)} results saved, "
          f"{in_flight} tasks taken but not acknowledged, {waiting} waiting")
    assert done_before < len(ids), "the cluster was killed mid-load"

    second = qcluster(q)
    wait_until(lambda: len(successes(q)) >= len(ids), within=300, what="every result")
    assert second.stop() == 0
    counts = runs(path)
    completed = len(successes(q) & set(ids))
    lost = len(ids) - completed
    twice = sum(1 for n in counts.values() if n > 1)
    print(f"kill -9 of the cluster: {len(ids)} enqueued, {completed} completed, {lost} lost, "
          f"{twice} run twice")
    assert lost == 0 and set(counts) == {args[1] for args in ids.values()}
    assert successes(q) == set(ids) and rows_of(q) == len(ids), \
        "one successful result per task: none extra, none failed"
    assert broker().queue_size() == 0 and broker().lock_size() == 0
    broker().delete_queue()


def test_a_cluster_started_before_its_endpoint_waits_for_it(cluster_settings, qcluster,
                                                            tmp_path):
    server = MotoServer(tmp_path)  # its port chosen, not started yet
    q = cluster_settings(server=server)
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
    assert "aws sqs create-queue --queue-name sqs-e2e-" in log, log
