"""Faults an operator meets, against real ``manage.py qcluster`` processes: malformed
packages, a result store that rejects writes, stopping during an outage, SIGTERM to
the whole process group, a ``manage.py`` without its ``__main__`` guard, starting
before ``migrate`` or with the broker down.

Each fault test counts tasks — enqueued, completed, lost, run twice — and lost is 0.
Executions are counted with ``qhive_testkit.tasks.record`` (one line per run).
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time

from qhive_testkit.outcomes import report, runs, tasks_of
from qhive_testkit.qcluster import QCluster, wait_until
from qhive_testkit.services import RedisServer, redis_url, require

T = "qhive_testkit.tasks"


def queued(q: dict) -> int:
    from qhive_broker_orm.models import QueuedTask

    return QueuedTask.objects.using(q["orm"]).filter(queue=q["name"]).count()


def taken(q: dict) -> int:
    from qhive_broker_orm.models import QueuedTask

    return QueuedTask.objects.using(q["orm"]).filter(queue=q["name"], deliveries__gte=1).count()


# --------------------------------------------------------------------------- item 1


def test_malformed_signed_packages_are_rejected_and_the_queue_goes_on(cluster_settings,
                                                                       qcluster, tmp_path):
    """Correctly signed packages that are not tasks are failed at the broker, never run,
    and do not stop the cluster (before: a list killed the pusher, exit 0; a dict
    without 'id' ran, then killed the sentinel — again on every restart)."""
    from qhive_django.conf import get_pipeline
    from qhive_django.tasks import async_task, fetch

    q = cluster_settings()
    pipeline = get_pipeline()
    marker = tmp_path / "ran"
    bad = [
        [1, 2, 3],
        {"func": "pathlib.Path.touch", "args": (marker,), "kwargs": {}},  # no id
        {"id": "f" * 32, "func": "pathlib.Path.touch", "args": marker, "kwargs": {},
         "started": None},  # args not a tuple, started not a datetime
    ]
    for package in bad:
        pipeline.broker.enqueue(pipeline.codec.encode(package))
    cluster = qcluster(q)
    good = async_task(f"{T}.add", 2, 3)
    assert fetch(good, wait=60_000).result == 5
    wait_until(lambda: queued(q) == 0, what="the malformed messages to be failed")
    log = cluster.log()
    assert log.count("rejected message") == 3, log
    assert "the package holds a list, not a task dict" in log
    assert "the task package has no 'id'" in log
    assert "the task package's 'args' must be a tuple or list" in log
    assert not marker.exists()
    assert tasks_of(q).count() == 1
    assert cluster.process.poll() is None, "the cluster stopped"
    assert cluster.stop() == 0


# --------------------------------------------------------------------------- items 2, 3, 5


def test_a_failing_result_store_stops_the_intake_and_nothing_runs_twice(
        cluster_settings, qcluster, redis_server, tmp_path):
    """Results go to a Redis of the test's own, stopped for longer than several
    ``retry`` periods while tasks wait on the shared Redis broker. The cluster holds at
    most ``queue_limit`` tasks, renews their receipts, and runs each task once. A
    worker's reconnects to the store never break its broker connection."""
    require("redis")
    path = tmp_path / "runs.jsonl"
    q = cluster_settings(redis=redis_url(), result_store="redis",
                         result_store_options={"redis": redis_server.url}, retry=2,
                         workers=2, queue_limit=4)
    from qhive_django.tasks import async_task, result

    cluster = qcluster(q)
    first = async_task(f"{T}.record", str(path), -1)
    assert result(first, wait=60_000) == [-1]
    redis_server.stop()
    for n in range(200):
        async_task(f"{T}.record", str(path), n)
    time.sleep(8)  # four 'retry' periods: unrenewed receipts would have run out four times
    # Each worker holds the results of the batch it ran (at most queue_limit / workers)
    # and takes nothing more until they are saved.
    held = [int(n) for n in re.findall(r"saving or acknowledging (\d+) results failed",
                                       cluster.log())]
    assert held and max(held) <= 4 // 2, held
    during = runs(path)
    assert len(during) <= 1 + 4, f"{len(during)} tasks ran while no result could be saved"
    redis_server.start()
    wait_until(lambda: len(runs(path)) == 201, what="every task to run")
    cluster.wait_for_log("result store reachable again")
    lost, twice = report("result store down for 8 s", path, 201)
    assert (lost, twice) == (0, 0)
    log = cluster.log()
    assert "taking tasks:" not in log, log  # the broker connection was never broken under it
    assert cluster.stop() == 0


def test_a_stop_during_a_store_outage_is_bounded_and_loses_nothing(
        cluster_settings, qcluster, redis_server, tmp_path):
    """SIGTERM while results cannot be saved: the cluster gives up on them after its
    bound, says so in one line, and exits. Their tasks come back after ``retry``."""
    require("redis")
    path = tmp_path / "runs.jsonl"
    q = cluster_settings(redis=redis_url(), result_store="redis",
                         result_store_options={"redis": redis_server.url}, retry=3,
                         workers=2, queue_limit=4)
    from qhive_django.tasks import async_task, result

    cluster = qcluster(q)
    redis_server.stop()
    ids = [async_task(f"{T}.record", str(path), n) for n in range(20)]
    cluster.wait_for_log("results failed")
    started = time.monotonic()
    assert cluster.stop(within=40) == 0  # the monitor used to retry for ever (58 s)
    print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM")
    unsaved = [int(n) for n in re.findall(r"stopping without saving (\d+) results",
                                          cluster.log())]
    # Each worker gives up on what it holds: at most queue_limit / workers each.
    assert unsaved and max(unsaved) <= 4 // 2, cluster.log()
    redis_server.start()
    second = qcluster(q)
    wait_until(lambda: all(result(i) is not None for i in ids), within=120,
               what="every task's result")
    lost, twice = report("stopped during a store outage", path, 20)
    assert lost == 0 and twice <= sum(unsaved)  # only those it said it left unsaved
    assert second.stop() == 0


# --------------------------------------------------------------------------- item 6


def test_sigterm_to_the_process_group_lets_running_tasks_finish(cluster_settings, qcluster):
    """systemd, Kubernetes and ``kill -- -PGID`` signal every process of the cluster:
    the workers leave the decision to the sentinel, so running tasks finish."""
    from qhive_django.tasks import async_task, fetch

    q = cluster_settings(workers=2)
    cluster = qcluster(q)
    ids = [async_task(f"{T}.sleep", 3, n) for n in range(2)]
    wait_until(lambda: taken(q) == 2, what="both tasks to run")
    time.sleep(0.5)  # into the task
    assert cluster.signal_group(signal.SIGTERM) == 0
    for n, task_id in enumerate(ids):
        task = fetch(task_id)
        assert task is not None and (task.success, task.result, task.attempt_count) == \
            (True, n, 1), task and task.result
    assert "died" not in cluster.log()


# --------------------------------------------------------------------------- items 7, 8


UNGUARDED_MANAGE = """\
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qhive_test_settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""


def test_a_manage_py_without_main_guard_works(django_project, cluster_settings, tmp_path):
    """Workers never run the main script again (Django Q2 works with such a manage.py)."""
    from qhive_django.tasks import async_task, result

    manage = tmp_path / "manage.py"
    manage.write_text(UNGUARDED_MANAGE)
    q = cluster_settings()
    cluster = QCluster(django_project, q, tmp_path / "q.log", manage=[sys.executable,
                                                                       str(manage)])
    try:
        cluster.wait_for_log("running (pid")
        assert result(async_task(f"{T}.add", 20, 22), wait=60_000) == 42
        assert "bootstrapping phase" not in cluster.log()
        assert cluster.stop() == 0
    finally:
        cluster.stop(signal.SIGKILL)


def test_qcluster_before_migrate_is_one_line_and_exit_1(django_project, tmp_path):
    bare = {"bare": {"ENGINE": "django.db.backends.sqlite3",
                     "NAME": str(tmp_path / "bare.sqlite3")}}
    q = {"name": "bare", "orm": "bare", "result_store_options": {"database": "bare"},
         "workers": 1}
    cluster = QCluster(django_project, q, tmp_path / "q.log",
                       env={"QHIVE_TEST_EXTRA_DATABASES": json.dumps(bare)})
    assert cluster.wait(within=60) == 1  # it used to run on, logging an error every 15 s
    log = cluster.log()
    assert "manage.py migrate --database bare" in log, log
    assert "Traceback" not in log, log
    assert len([line for line in log.splitlines() if "migrate" in line]) == 1, log


def test_an_unreachable_broker_at_start_is_one_line_then_retried(cluster_settings, qcluster,
                                                                 tmp_path):
    """Not a 79-line traceback and exit 1: the cluster starts, says it cannot reach the
    broker, and works once the broker is up."""
    from qhive_django.tasks import async_task, result

    server = RedisServer(tmp_path)  # not started yet
    try:
        q = cluster_settings(redis=server.url)
        cluster = qcluster(q)
        log = cluster.log()
        assert "the broker cannot be reached yet" in log and "Traceback" not in log, log
        cluster.wait_for_log("taking tasks: broker error")  # the workers keep trying
        server.start()
        assert result(async_task(f"{T}.add", 1, 2), wait=60_000) == 3
        cluster.wait_for_log("broker reachable again")
        # Once by each worker that noticed (2 workers), and not a traceback in sight.
        assert 1 <= cluster.log().count("broker reachable again") <= 2
        assert "Traceback" not in cluster.log()
        assert cluster.stop() == 0
    finally:
        server.stop()
