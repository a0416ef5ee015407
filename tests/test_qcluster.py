"""Real ``manage.py qcluster`` processes on real databases, with the ORM broker and
the ORM result store: what the walking skeleton promises.

Each test runs its own cluster under a unique ``name`` (its own queue and
results), started as a subprocess of the test project and stopped by pid.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from qhive_testkit.qcluster import wait_until
from qhive_testkit.tasks import FAILURES

T = "qhive_testkit.tasks"


def tasks_of(q_cluster: dict):
    from qhive_store_orm.models import Task

    return Task.objects.using(q_cluster["orm"]).filter(cluster=q_cluster["name"])


def queued(q_cluster: dict) -> int:
    from qhive_broker_orm.models import QueuedTask

    return QueuedTask.objects.using(q_cluster["orm"]).filter(queue=q_cluster["name"]).count()


def test_drains_1000_tasks_with_one_result_each(database, cluster_settings, qcluster):
    from qhive_django.tasks import async_task

    q = cluster_settings(database)
    cluster = qcluster(q)
    ids = {async_task(f"{T}.add", n, 1000): n + 1000 for n in range(1000)}
    wait_until(lambda: tasks_of(q).count() >= 1000, what="1000 results")
    rows = list(tasks_of(q).values_list("id", "success", "attempt_count"))
    assert len(rows) == 1000 and {r[0] for r in rows} == set(ids)
    assert all(success and attempts == 1 for _, success, attempts in rows)
    results = {t.id: t.result for t in tasks_of(q)}
    assert results == ids
    wait_until(lambda: queued(q) == 0, within=30, what="every message acknowledged")
    assert cluster.stop() == 0
    assert "stopped (1000 processed, 0 failed)" in cluster.log()


def test_killed_worker_task_comes_back_after_retry(cluster_settings, qcluster):
    from qhive_django.tasks import async_task, fetch, status

    q = cluster_settings(retry=2)
    cluster = qcluster(q)
    task_id = async_task(f"{T}.sleep", 3, "survived")
    # Running, as its worker's slot says (taken but not started, it would only come back).
    wait_until(lambda: status(task_id).status == "running", what="the task to start")
    for pid in cluster.stat().workers:  # one of them runs the task
        os.kill(pid, signal.SIGKILL)
    task = fetch(task_id, wait=60_000)
    wait_until(lambda: (t := fetch(task_id)) and t.success, what="the redelivered task")
    task = fetch(task_id)
    assert (task.result, task.attempt_count) == ("survived", 2)
    assert "died (killed by SIGKILL)" in cluster.log()
    assert cluster.stat().reincarnations >= 2
    assert cluster.stop() == 0


def test_timeouts(cluster_settings, qcluster):
    from qhive_django.tasks import async_task, fetch

    q = cluster_settings(timeout=0.5, guard_cycle=0.3, ack_failures=True)
    cluster = qcluster(q)
    stuck = async_task(f"{T}.sleep", 30)
    longer = async_task(f"{T}.sleep", 1, "within 2.5 s", timeout=2.5)
    unlimited = async_task(f"{T}.sleep", 1, "no limit", timeout=None)
    failure = fetch(stuck, wait=30_000)
    assert failure is not None and not failure.success
    assert "Task exceeded maximum timeout value (0.5 seconds)" in failure.result
    assert failure.time_taken() < 15  # killed long before the task's own 30 s
    assert fetch(longer, wait=30_000).result == "within 2.5 s"
    assert fetch(unlimited, wait=30_000).result == "no limit"
    assert cluster.stop() == 0


@pytest.mark.parametrize(("func", "expected"), FAILURES.items())
def test_bad_tasks_fail_clearly_without_stalling(cluster_settings, qcluster, func, expected):
    from qhive_django.tasks import async_task, fetch

    q = cluster_settings(ack_failures=True)
    cluster = qcluster(q)
    bad = [async_task(f"{T}.{func}") for _ in range(3)]
    good = async_task(f"{T}.add", 20, 22)
    assert fetch(good, wait=60_000).result == 42
    for task_id in bad:
        failure = fetch(task_id, wait=60_000)
        assert failure.success is False and expected in failure.result
    # results are saved, then their messages acknowledged: gone a moment after
    wait_until(lambda: queued(q) == 0, within=30, what="every message acknowledged")
    assert cluster.stop() == 0


def test_sigterm_under_load_loses_nothing(cluster_settings, qcluster):
    from qhive_django.tasks import async_task

    q = cluster_settings(retry=600, workers=2)
    cluster = qcluster(q)
    ids = [async_task(f"{T}.sleep", 0.02, n) for n in range(400)]
    wait_until(lambda: tasks_of(q).count() >= 20, what="some results")
    assert cluster.stop(signal.SIGTERM) == 0
    done = tasks_of(q).count()
    waiting = queued(q)
    assert 0 < done < 400, done
    assert done + waiting == len(ids), f"{done} results + {waiting} queued != {len(ids)}"
    assert "stopping" in cluster.log() and "stopped (" in cluster.log()
    # Given back, not hidden until 'retry': a new cluster takes them at once.
    second = qcluster(q)
    wait_until(lambda: tasks_of(q).count() == 400, within=120, what="the rest")
    assert set(tasks_of(q).values_list("id", flat=True)) == set(ids)
    assert second.stop() == 0


def test_tampered_row_is_failed_and_never_run(cluster_settings, qcluster, tmp_path):
    from qhive_broker_orm.models import QueuedTask
    from qhive_django.tasks import async_task, fetch

    q = cluster_settings()
    marker = tmp_path / "ran"
    async_task("pathlib.Path.touch", marker)
    row = QueuedTask.objects.using("default").get(queue=q["name"])
    payload = bytearray(row.payload)
    payload[-5] ^= 0x01
    row.payload = bytes(payload)
    row.save(using="default")
    cluster = qcluster(q)
    good = async_task(f"{T}.add", 1, 1)
    assert fetch(good, wait=60_000).result == 2
    wait_until(lambda: queued(q) == 0, what="the tampered row to be failed")
    assert "rejected message" in cluster.log() and "signature does not match" in cluster.log()
    assert not marker.exists()
    assert tasks_of(q).count() == 1
    assert cluster.stop() == 0


def test_recycle_and_max_rss_replace_workers(cluster_settings, qcluster):
    from qhive_django.tasks import async_task

    for settings in ({"recycle": 2}, {"max_rss": 1}):
        q = cluster_settings(**settings)
        cluster = qcluster(q)
        before = set(cluster.stat().workers)
        for n in range(12):
            async_task(f"{T}.add", n, n)
        wait_until(lambda q=q: tasks_of(q).count() == 12, what="12 results")
        stat = wait_until(lambda c=cluster: (s := c.stat()) and s.reincarnations >= 4 and s,
                          what="reincarnations in Stat")
        assert not before & set(stat.workers), settings
        assert "recycled" in cluster.log()
        assert cluster.stop() == 0


def test_max_attempts_two_with_a_task_that_always_dies(cluster_settings, qcluster):
    from qhive_django.tasks import async_task, fetch

    q = cluster_settings(retry=1, max_attempts=2)
    cluster = qcluster(q)
    task_id = async_task(f"{T}.die")
    wait_until(lambda: (t := fetch(task_id)) and t.attempt_count >= 2, within=60,
               what="two attempts")
    time.sleep(3)  # three more retry periods: nothing else may happen
    task = fetch(task_id)
    assert (task.success, task.attempt_count) == (False, 2)
    assert "the worker running this task died (exit code 13)" in task.result
    assert queued(q) == 0
    assert cluster.log().count("died (exit 13)") == 2
    assert cluster.stop() == 0
