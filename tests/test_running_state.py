"""A task's state while it runs, seen from outside the cluster: ``status()``, the
admin's "Running tasks", ``qinfo``; and what becomes of it when its worker or its
whole cluster is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from qhive_testkit.qcluster import wait_until

T = "qhive_testkit.tasks"

pytestmark = pytest.mark.slow


def state_when(task_id, condition, within=30.0, what="the task's state"):
    from qhive_django.tasks import status

    def seen():
        state = status(task_id)
        return state if condition(state) else None

    return wait_until(seen, within=within, what=what)


def test_a_long_task_is_seen_running_with_its_progress(cluster_settings, qcluster,
                                                       django_project, admin_client):
    from qhive_django.tasks import async_task, result, status

    q = cluster_settings(workers=2)
    cluster = qcluster(q)
    before = time.time()
    # 20 s in two steps: the second half leaves 10 s for the page and two commands that
    # each start Django (10 s in all lost that race once, on Python 3.13 under a full suite).
    task_id = async_task(f"{T}.in_steps", 20, 2, task_name="twenty-seconds")
    assert status(task_id).status == "queued"

    halfway = state_when(task_id, lambda s: s.progress == 0.5, within=20, what="progress 0.5")
    stat = cluster.stat()
    assert halfway.status == "running" and halfway.running
    assert (halfway.name, halfway.func) == ("twenty-seconds", f"{T}.in_steps")
    assert (halfway.cluster, halfway.cluster_id, halfway.host) == (
        q["name"], stat.cluster_id, stat.host)
    assert halfway.worker in stat.workers
    assert before <= halfway.started.timestamp() <= time.time() - 4  # began ≥ 5 s ago
    assert halfway.progress_text == "50% step 2 of 2"
    # By name too, as fetch() finds tasks.
    assert status("twenty-seconds").id == task_id

    page = admin_client.get("/admin/qhive_django/runningtask/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "twenty-seconds" in html and f"{T}.in_steps" in html and str(halfway.worker) in html
    assert "50% step 2 of 2" in html and "1 task running now" in html

    for command in (["qinfo"], ["qmonitor", "--run-once"]):
        shown = subprocess.run(django_project.manage(*command), env=django_project.env(q),
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        line = next(line for line in shown.stdout.splitlines() if "twenty-seconds" in line)
        assert f"{T}.in_steps" in line and str(halfway.worker) in line, command
        assert "50% step 2 of 2" in line, command

    assert result(task_id, wait=20_000) == 2
    done = status(task_id)
    assert done.status == "succeeded" and done.result.result == 2 and not done.running
    # The page reads the clusters' stats: a guard cycle later it is gone from there too.
    wait_until(lambda: "0 tasks running now" in admin_client.get(
        "/admin/qhive_django/runningtask/").content.decode(), within=10, what="an empty page")


def test_a_killed_workers_task_does_not_stay_running(cluster_settings, qcluster):
    from qhive_django.tasks import async_task, fetch

    q = cluster_settings(workers=2, retry=600, max_attempts=1)
    cluster = qcluster(q)
    task_id = async_task(f"{T}.sleep", 60)
    running = state_when(task_id, lambda s: s.running)
    os.kill(running.worker, signal.SIGKILL)

    after = state_when(task_id, lambda s: not s.running, within=10,
                       what="the task no longer running")
    assert after.status == "failed"
    assert "the worker running this task died" in after.result.result
    wait_until(lambda: cluster.stat().running == [], within=5, what="no task running")
    failed = fetch(task_id)
    assert failed is not None and not failed.success and failed.attempt_count == 1
    print("1 enqueued, 1 completed (failed: its worker was killed), 0 lost, 0 run twice")


def test_a_killed_clusters_task_goes_back_to_queued(cluster_settings, qcluster):
    from qhive_django.tasks import async_task

    q = cluster_settings(workers=1, retry=600)
    cluster = qcluster(q)
    task_id = async_task(f"{T}.sleep", 60)
    state_when(task_id, lambda s: s.running)
    cluster.signal_group(signal.SIGKILL)
    # Its stat expires (a few guard cycles): nobody runs it; it comes back after 'retry'.
    after = state_when(task_id, lambda s: not s.running, within=15,
                       what="the task no longer running")
    assert after.status == "queued"
