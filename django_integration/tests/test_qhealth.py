"""``manage.py qhealth`` run as a container probe runs it: a subprocess of the test
project whose exit code and stderr are read, against real ``manage.py qcluster``
processes, the project's SQLite database (the ORM broker and result store) and real
Redis servers. Stats of clusters on another host, or of a stopping one, are saved
the way a cluster saves them (:class:`qhive.cluster.stat.StatStore`, signed)."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from qhive.cluster.stat import STOPPING, Stat
from qhive_testkit.qcluster import wait_until
from qhive_testkit.services import redis_url, require

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("qhive.cluster", "qhive_broker_orm",
                                                      "qhive_store_orm")),
        reason="needs the cluster (qhive.cluster) and the ORM broker and result store"),
]

#: A third-party broker with no place for statistics (tests/fixtures of the repo).
SQLITEFILE = (Path(__file__).resolve().parents[2] / "tests" / "fixtures"
              / "qhive-broker-sqlitefile" / "src")
HOST = socket.gethostname()


@pytest.fixture
def project(cluster_settings):
    """``project(**settings)``: the testkit's ``cluster_settings`` with one worker (the ORM
    broker and result store on the test project's SQLite database unless ``settings``
    choose others)."""
    return functools.partial(cluster_settings, workers=1)


@pytest.fixture
def qhealth(django_project):
    """``qhealth(q_cluster, *args, **env)``: run ``manage.py qhealth`` as a probe does."""
    def run(q_cluster: dict, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(django_project.manage("qhealth", *args),
                              env={**django_project.env(q_cluster), **env},
                              capture_output=True, text=True, timeout=120)

    return run


def lines(text: str) -> list[str]:
    return text.strip().splitlines()


def save_stat(q: dict, **fields) -> Stat:
    """Save a stat of the project ``q`` where its clusters save theirs, as one would."""
    from qhive_django.conf import get_pipeline

    stat = Stat(**{"cluster_id": uuid.uuid4().hex, "name": q["name"], "host": HOST,
                   "pid": os.getpid(), "status": "Idle", "workers": [os.getpid()], **fields})
    assert get_pipeline().config.name == q["name"]  # ``project`` applied q here
    Stat.store_for(get_pipeline()).save(stat, ttl=120)
    return stat


@pytest.mark.parametrize("broker", ["orm", "redis"])
def test_a_running_cluster_is_healthy_and_a_stopped_one_is_not(broker, project, qcluster,
                                                               qhealth):
    if broker == "redis":
        require("redis")
    q = project(**({"redis": redis_url()} if broker == "redis" else {}))
    cluster = qcluster(q)
    stat = wait_until(cluster.stat, within=60, what="the cluster's statistics")

    done = qhealth(q)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert re.fullmatch(
        rf"ok: cluster {q['name']} \({stat.short_id}\) on {re.escape(HOST)}, (Idle|Working), "
        rf"1 workers, stat \d+\.\d s old; broker OK; result store OK\n", done.stdout), done.stdout

    assert cluster.stop() == 0
    done = qhealth(q)
    assert done.returncode == 1, done.stdout
    assert done.stdout == ""
    # Its last stat says Stopped until it expires; then it is gone: either way it is named.
    [problem] = lines(done.stderr)
    assert f"cluster {q['name']!r}" in problem and "manage.py qcluster" in problem, problem


def test_no_cluster_is_unhealthy_and_says_how_to_start_one(project, qhealth):
    q = project()
    done = qhealth(q)
    assert done.returncode == 1
    assert done.stdout == ""
    assert lines(done.stderr) == [
        f"no cluster {q['name']!r} is running on this host ({HOST}): start one with "
        f"`manage.py qcluster --name {q['name']}` (if one runs, its log says why it cannot "
        f"save its statistics in the broker (OrmBroker))"]


def test_a_dead_broker_fails_the_probe_while_the_cluster_runs(redis_server, project, qcluster,
                                                             qhealth):
    q = project(redis=redis_server.url)  # stats in that Redis; results in SQLite
    cluster = qcluster(q)
    wait_until(cluster.stat, within=60, what="the cluster's statistics")
    assert qhealth(q).returncode == 0

    redis_server.stop()
    done = qhealth(q)
    assert cluster.process.poll() is None  # the cluster outlives its broker: only the probe fails
    assert done.returncode == 1
    broker, stats = lines(done.stderr)
    assert broker.startswith("cannot reach the broker (RedisBroker, queue "), broker
    assert f"127.0.0.1:{redis_server.port}" in broker and "redis-server" in broker, broker
    assert stats == (f"cluster {q['name']!r}: state unknown, its statistics are kept in the "
                     f"broker (RedisBroker), which does not answer (see above)")

    done = qhealth(q, "--backends-only")  # the result store (SQLite) still answers
    assert (done.returncode, lines(done.stderr)) == (1, [broker])


def test_a_broker_that_never_answers_cannot_hang_the_probe(project, qhealth):
    # A server that accepts connections and never replies (the kernel accepts them into
    # the backlog): redis-py alone would wait 5 s, then retry once.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)
        q = project(redis=f"redis://127.0.0.1:{mute.getsockname()[1]}/0")
        done = qhealth(q, "--timeout", "1")
    assert done.returncode == 1
    broker, stats = lines(done.stderr)
    assert broker.startswith("the broker (RedisBroker, queue ") and (
        "did not answer within 1 s" in broker), broker
    assert "state unknown" in stats, stats


def test_a_killed_cluster_is_unhealthy_once_its_stat_is_older_than_max_age(project, qcluster,
                                                                               qhealth):
    # A stat every 5 s that expires after 30 s: the killed cluster's last one stays.
    q = project(guard_cycle=5)
    cluster = qcluster(q)
    stat = wait_until(cluster.stat, within=60, what="the cluster's statistics")
    cluster.kill()
    time.sleep(1)  # the stat is now at least 1 s old

    done = qhealth(q, "--max-age", "0.5")
    assert done.returncode == 1, done.stdout
    [problem] = lines(done.stderr)
    assert problem.startswith(f"cluster {q['name']!r} ({stat.short_id}) on {HOST} last saved "
                              f"its statistics "), problem
    assert "more than --max-age 0.5 s (it saves them every guard_cycle, 5 s)" in problem
    assert "Restart it" in problem

    done = qhealth(q, "--max-age", "3600")  # the same stat, accepted as fresh enough
    assert done.returncode == 0, done.stderr


def test_cluster_chooses_an_alt_cluster_and_an_unknown_name_lists_the_known(project, qcluster,
                                                                           qhealth):
    q = project(ALT_CLUSTERS={"long": {"workers": 2}})
    cluster = qcluster(q, "--name", "long")
    stat = wait_until(cluster.stat, within=60, what="the cluster's statistics")

    done = qhealth(q, "--cluster", "long")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ok: cluster long ({stat.short_id}) on {HOST}, ")
    assert ", 2 workers, " in done.stdout
    assert qhealth(q, Q_CLUSTER_NAME="long").returncode == 0  # as qcluster picks it

    done = qhealth(q)  # the root cluster does not run
    assert done.returncode == 1
    [problem] = lines(done.stderr)
    assert problem.startswith(f"no cluster {q['name']!r} is running on this host"), problem
    assert f"(running: 'long' on {HOST}; choose one with --cluster NAME" in problem

    done = qhealth(q, "--cluster", "lnog")
    assert done.returncode == 1
    [problem] = lines(done.stderr)
    assert "unknown cluster 'lnog'" in problem, problem
    assert f"known clusters: {q['name']!r}, 'long'" in problem and "did you mean 'long'" in problem


def test_only_a_cluster_on_this_host_counts_unless_any_host(project, qhealth):
    q = project()
    save_stat(q, host="elsewhere-1")

    done = qhealth(q)
    assert done.returncode == 1
    [problem] = lines(done.stderr)
    assert f"(running: {q['name']!r} on elsewhere-1; " in problem, problem
    assert "--any-host" in problem

    done = qhealth(q, "--any-host")
    assert done.returncode == 0, done.stderr
    assert f"ok: cluster {q['name']} (" in done.stdout and " on elsewhere-1, " in done.stdout


def test_a_stopping_cluster_is_not_ready(project, qhealth):
    q = project()
    stat = save_stat(q, status=STOPPING)

    done = qhealth(q)
    assert done.returncode == 1
    assert lines(done.stderr) == [
        f"cluster {q['name']!r} ({stat.short_id}) on {HOST} is Stopping: not ready, it is "
        f"shutting down or has stopped. Start it again with `manage.py qcluster --name "
        f"{q['name']}` (a service manager restarts it)"]


def test_without_statistics_the_probe_fails_unless_backends_only(django_project, project,
                                                                 qhealth, tmp_path):
    # A broker and a result store that can keep no statistics: no cluster can be seen.
    q = project(broker_class="qhive_broker_sqlitefile.SqliteFileBroker",
                broker_options={"path": str(tmp_path / "queue.db")}, result_store="memory",
                result_store_options={})
    path = os.pathsep.join([str(SQLITEFILE), django_project.env()["PYTHONPATH"]])

    done = qhealth(q, PYTHONPATH=path)
    assert done.returncode == 1
    [problem] = lines(done.stderr)
    assert problem.startswith("No cluster statistics can be kept: the broker "
                              "(SqliteFileBroker) has no place for them"), problem
    assert problem.endswith("qhealth cannot see a running cluster. To probe only the broker "
                            "and the result store, run qhealth --backends-only"), problem

    done = qhealth(q, "--backends-only", PYTHONPATH=path)
    assert (done.returncode, done.stdout, done.stderr) == (
        0, "ok: broker OK; result store OK\n", "")
