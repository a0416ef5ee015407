"""Real ``manage.py qcluster`` processes with the plugin, scraped over HTTP as Prometheus
would: counters move during a run and end equal to the result store's counts, whether
a worker, or the sentinel for a worker that died, saved the result; they keep counting
exactly as workers recycle, while the files of exited workers are folded away; the
count directory is the cluster's own, inherited by its workers only, and gone after
the stop (or the environment's own, kept); the queue size and worker gauges follow a
cluster held busy by gated tasks; a cluster without the setting, or whose port is
taken, runs on without opening a port and its workers count nothing; bad options stop
``qcluster`` at its checks; ``ALT_CLUSTERS`` entries have settings of their own.
"""

from __future__ import annotations

import contextlib
import signal
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from qhive_testkit.outcomes import enqueue_many, tasks_of
from qhive_testkit.qcluster import wait_until

T = "qhive_testkit.tasks"
ADD, BOOM, DIE = f"{T}.add", f"{T}.boom", f"{T}.die"


def store_counts(q: dict) -> tuple[int, int]:
    """(successes, failures) the result store holds for the cluster."""
    rows = tasks_of(q)
    return rows.filter(success=True).count(), rows.filter(success=False).count()


def environs(cluster) -> list[dict[str, str]]:
    """The environments the cluster's other processes started with: its forkserver's
    (the sentinel's as the first worker started) and its workers' (the forkserver's)."""
    found = []
    for process in psutil.Process(cluster.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker replaced meanwhile
            found.append(process.environ())
    assert len(found) >= 3, found  # the forkserver and two workers at least
    return found


def count_directory(cluster) -> Path:
    """The directory the cluster's workers count in, as every one inherited it."""
    found = {(env.get("PROMETHEUS_MULTIPROC_DIR"), env.get("QHIVE_PROMETHEUS_CLUSTER"))
             for env in environs(cluster)}
    assert len(found) == 1, found
    directory, name = found.pop()
    assert directory and name == cluster.q_cluster["name"], (directory, name)
    return Path(directory)


def serves(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10):
            return True
    except (urllib.error.URLError, ConnectionError):  # refused, or reset as it closes
        return False


def test_counters_move_during_a_run_and_end_equal_to_the_result_store(
        cluster_settings, qcluster, metrics_url, scrape, listening_ports):
    # retry 4 s: the tasks a dying worker took and had not saved come back soon.
    q = cluster_settings(ack_failures=True, retry=4, plugins={"prometheus": {"port": 0}})
    cluster = qcluster(q)
    url = metrics_url(cluster)
    name = q["name"]
    assert url.startswith("http://127.0.0.1:")
    assert int(url.rsplit(":", 1)[1].split("/")[0]) in listening_ports(cluster.pid)

    totals: list[float] = []  # qhive_tasks_total at each scrape, all while the cluster runs

    def done(expected: int):
        metrics = scrape(url)
        totals.append(metrics.value("qhive_tasks_total", cluster=name))
        return metrics if totals[-1] >= expected else None

    # Two batches: the second starts once the first is counted, so that two scrapes
    # during the run show different counts whatever the machine's speed.
    enqueue_many(ADD, [(n, 1) for n in range(80)])
    enqueue_many(BOOM, [(f"boom {n}",) for n in range(20)])
    first = wait_until(lambda: done(100), within=120, what="100 results counted")
    assert first.value("qhive_tasks_total", cluster=name, status="success") == 80
    assert first.value("qhive_tasks_total", cluster=name, status="failure") == 20
    assert store_counts(q) == (80, 20)

    enqueue_many(ADD, [(n, 2) for n in range(78)])
    enqueue_many(BOOM, [(f"boom {n}",) for n in range(20)])
    # Two workers die: two restarts, and two failures the sentinel saves and counts.
    enqueue_many(DIE, [(), ()])
    last = wait_until(lambda: done(200), within=180, what="200 results counted")
    assert totals == sorted(totals), f"a counter went down: {totals}"
    assert 100 in totals and totals[-1] == 200, totals

    # At the end, every counter equals what the result store holds.
    successes, failures = store_counts(q)
    assert (successes, failures) == (158, 42)
    assert last.value("qhive_tasks_total", cluster=name, status="success") == successes
    assert last.value("qhive_tasks_total", cluster=name, status="failure") == failures
    assert last.value("qhive_tasks_total", func=ADD, status="success") == 158
    assert last.value("qhive_tasks_total", func=BOOM, status="failure") == 40
    assert last.value("qhive_tasks_total", func=DIE, status="failure") == 2
    assert last.value("qhive_tasks_total", func=ADD, status="failure") == 0
    # The cluster's own count of saved results (qinfo, the stop line below): a worker that
    # died with results it ran but had not saved must not have counted them (their tasks
    # come back, run again and are saved once).
    assert last.value("qhive_cluster_tasks_processed_total", cluster=name) == 200
    assert last.value("qhive_cluster_tasks_failed_total", cluster=name) == 42
    assert last.value("qhive_task_run_seconds_count", cluster=name, func=ADD) == 158
    assert last.value("qhive_task_run_seconds_count", cluster=name) == 200
    assert last.value("qhive_task_run_seconds_bucket", func=ADD, le="+Inf") == 158
    assert last.value("qhive_task_queue_wait_seconds_count", cluster=name) == 200
    assert last.value("qhive_task_run_seconds_sum", cluster=name) > 0
    assert last.value("qhive_task_queue_wait_seconds_sum", cluster=name) > 0
    assert last.value("qhive_worker_restarts_total", cluster=name) == 2
    assert last.value("qhive_workers", cluster=name) == 2
    assert last.value("qhive_workers_configured", cluster=name) == 2
    assert last.value("qhive_broker_errors_total", cluster=name) == 0
    assert last.value("qhive_result_store_errors_total", cluster=name) == 0
    wait_until(lambda: scrape(url).value("qhive_queue_size", cluster=name) == 0
               and scrape(url).has("qhive_queue_size"), within=30, what="an empty queue")

    # Its own registry: nothing of prometheus_client's global one (process metrics).
    assert not any(n.startswith(("process_", "python_")) for n, _ in last)

    # A private directory, inherited by the workers (those that replaced the dead ones
    # too); gone once the cluster exits.
    directory = count_directory(cluster)
    assert directory.is_dir() and oct(directory.stat().st_mode & 0o777) == "0o700"
    assert cluster.stop() == 0
    assert "stopped (200 processed, 42 failed)" in cluster.log()
    assert not serves(url)
    assert not directory.exists()


def test_counts_stay_exact_as_workers_recycle_and_their_files_fold(
        cluster_settings, qcluster, metrics_url, scrape):
    # recycle 7: a worker is replaced every 7 tasks, about 20 times in the run; each
    # leaves files that the next scrape folds into the sentinel's.
    q = cluster_settings(ack_failures=True, recycle=7, plugins={"prometheus": {"port": 0}})
    cluster = qcluster(q)
    url, name = metrics_url(cluster), q["name"]
    directory = count_directory(cluster)

    enqueue_many(ADD, [(n, 1) for n in range(60)])
    enqueue_many(BOOM, [(f"boom {n}",) for n in range(10)])
    wait_until(lambda: scrape(url).value("qhive_tasks_total") >= 40, within=120,
               what="40 results counted")
    enqueue_many(ADD, [(n, 2) for n in range(60)])
    enqueue_many(BOOM, [(f"boom {n}",) for n in range(10)])
    last = wait_until(lambda: (m := scrape(url)).value("qhive_tasks_total") >= 140 and m,
                      within=180, what="140 results counted")

    assert store_counts(q) == (120, 20)
    assert last.value("qhive_tasks_total", func=ADD, status="success") == 120
    assert last.value("qhive_tasks_total", func=BOOM, status="failure") == 20
    assert last.value("qhive_task_run_seconds_count", cluster=name) == 140
    assert last.value("qhive_task_queue_wait_seconds_count", cluster=name) == 140
    assert last.value("qhive_worker_restarts_total", cluster=name) >= 15

    # Left: the sentinel's own pair, and the files of processes still running.
    live = {cluster.pid, *(p.pid for p in psutil.Process(cluster.pid).children(True))}
    for path in directory.glob("*.db"):
        owner = path.stem.rpartition("_")[2]
        assert owner == f"qhive-sentinel-{cluster.pid}" or int(owner) in live, path.name
    assert len(list(directory.glob("*.db"))) <= 2 + 2 * 3  # sentinel, 2 workers, forkserver
    assert scrape(url).value("qhive_tasks_total") == 140  # what was folded still counts
    assert cluster.stop() == 0
    assert not directory.exists()


def test_a_multiprocess_directory_of_the_environment_is_used_and_kept(
        cluster_settings, qcluster, metrics_url, scrape, tmp_path):
    # A project that uses prometheus_client's multiprocess mode itself sets the variable.
    mine = tmp_path / "multiproc"
    mine.mkdir()
    q = cluster_settings(plugins={"prometheus": {"port": 0}})
    cluster = qcluster(q, env={"PROMETHEUS_MULTIPROC_DIR": str(mine)})
    url, name = metrics_url(cluster), q["name"]
    enqueue_many(ADD, [(n, 1) for n in range(5)])
    counted = wait_until(lambda: (m := scrape(url)).value("qhive_tasks_total") == 5 and m,
                         within=60, what="5 results counted")
    assert counted.value("qhive_tasks_total", cluster=name, func=ADD, status="success") == 5
    assert count_directory(cluster) == mine
    assert any(mine.glob("counter_*.db"))
    assert cluster.stop() == 0
    assert mine.is_dir() and any(mine.glob("counter_*.db"))


def test_queue_size_and_workers_follow_a_busy_cluster(cluster_settings, qcluster, metrics_url,
                                                      scrape, tmp_path):
    # queue_limit 1: a worker takes one task at a time. While both workers run a gated
    # task the cluster takes nothing more, so what is enqueued then waits in the broker.
    q = cluster_settings(ack_failures=True, queue_limit=1, plugins={"prometheus": {"port": 0}})
    cluster = qcluster(q)
    url, name = metrics_url(cluster), q["name"]
    gates = [tmp_path / "gate 1", tmp_path / "gate 2"]
    enqueue_many("prometheus_gate.wait_for", [(str(gate),) for gate in gates])
    wait_until(lambda: scrape(url).value("qhive_workers", cluster=name, state="busy") == 2,
               within=60, what="two busy workers")
    enqueue_many(ADD, [(n, 1) for n in range(5)])
    held = wait_until(lambda: (m := scrape(url)).value("qhive_queue_size") == 5 and m,
                      within=30, what="5 tasks waiting in the broker")
    assert held.value("qhive_workers", cluster=name, state="idle") == 0
    assert held.value("qhive_tasks_prefetched", cluster=name) == 0
    assert held.value("qhive_tasks_total", cluster=name) == 0

    for gate in gates:
        gate.touch()
    final = wait_until(lambda: (m := scrape(url)).value("qhive_tasks_total") == 7
                       and m.has("qhive_queue_size") and m.value("qhive_queue_size") == 0
                       and m, within=60, what="the queue drained")
    assert final.value("qhive_tasks_total", func="prometheus_gate.wait_for",
                       status="success") == 2
    assert store_counts(q) == (7, 0)

    # The server stops as the cluster's stop begins, while running tasks still finish.
    second = tmp_path / "second gate"
    enqueue_many("prometheus_gate.wait_for", [(str(second),)])
    wait_until(lambda: scrape(url).value("qhive_workers", cluster=name, state="busy") == 1,
               within=60, what="a busy worker")
    cluster.process.send_signal(signal.SIGTERM)
    wait_until(lambda: not serves(url), within=30, what="the server stopped")
    assert cluster.process.poll() is None, "the cluster waits for its running task"
    second.touch()
    assert cluster.wait() == 0
    assert store_counts(q) == (8, 0)


def test_a_cluster_without_the_setting_opens_no_port(cluster_settings, qcluster,
                                                     listening_ports):
    q = cluster_settings(plugins={"trace": False})  # plugins set, not this one
    cluster = qcluster(q)
    enqueue_many(ADD, [(1, 2)])
    wait_until(lambda: store_counts(q) == (1, 0), within=60, what="the task's result")
    assert listening_ports(cluster.pid) == set()
    assert "Prometheus" not in cluster.log()
    for env in environs(cluster):  # nothing for workers to count with
        assert not {"PROMETHEUS_MULTIPROC_DIR", "QHIVE_PROMETHEUS_CLUSTER"} & set(env)
    assert cluster.stop() == 0


def test_bad_options_stop_qcluster_at_its_checks(cluster_settings, django_project, tmp_path):
    from qhive_testkit.qcluster import QCluster

    q = cluster_settings(plugins={"prometheus": {"port": "9191"}})
    cluster = QCluster(django_project, q, tmp_path / "qcluster.log")
    assert cluster.wait(120) != 0
    assert ("(qhive.E004) Prometheus metrics: Q_CLUSTER['plugins']['prometheus']['port'] must "
            "be a port number from 0 to 65535 (0: any free port), got '9191' (str)"
            in cluster.log()), cluster.log()


@pytest.mark.parametrize("where", ["port in use", "address not of this host",
                                   "no count directory"])
def test_a_cluster_that_cannot_serve_is_one_error_line_and_runs_on(
        cluster_settings, qcluster, busy_port, listening_ports, tmp_path, where):
    key = "Q_CLUSTER['plugins']['prometheus']"
    env = {}
    if where == "port in use":
        options = {"port": busy_port}
        said = (f"cannot listen on 127.0.0.1:{busy_port} (Address already in use): choose a "
                f"free port in {key}['port'] (0: any free port)")
    elif where == "address not of this host":
        options = {"port": 0, "addr": "192.0.2.1"}  # TEST-NET-1: never a local address
        said = f"cannot listen on 192.0.2.1:0 (Cannot assign requested address): check " \
               f"{key}['addr'] and {key}['port']"
    else:
        options = {"port": 0}
        env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")}
        said = (f"PROMETHEUS_MULTIPROC_DIR='{tmp_path / 'missing'}' in the environment is not "
                f"a directory: create it, or unset the variable for the cluster to count in "
                f"a directory of its own")
    q = cluster_settings(plugins={"prometheus": options})
    cluster = qcluster(q, env=env)
    lines = [line for line in cluster.log().splitlines() if "Prometheus" in line]
    assert len(lines) == 1, cluster.log()
    assert " ERROR Prometheus metrics: " in lines[0] and said in lines[0], lines[0]
    assert lines[0].endswith("runs without metrics")
    enqueue_many(ADD, [(n, 1) for n in range(3)])
    wait_until(lambda: store_counts(q) == (3, 0), within=60, what="3 results")
    assert listening_ports(cluster.pid) == set()
    for started_with in environs(cluster):  # nothing for workers to count with
        assert "QHIVE_PROMETHEUS_CLUSTER" not in started_with
        assert started_with.get("PROMETHEUS_MULTIPROC_DIR") == env.get("PROMETHEUS_MULTIPROC_DIR")
    assert cluster.stop() == 0


def test_alt_clusters_have_settings_of_their_own(cluster_settings, qcluster, metrics_url,
                                                 scrape, busy_port, listening_ports):
    # The root's port is taken: a cluster that used the root's settings would say so.
    q = cluster_settings(plugins={"prometheus": {"port": busy_port}}, ALT_CLUSTERS={
        "long": {"plugins": {"prometheus": {"port": 0}}},
        "quiet": {"plugins": {}},
    })
    long = qcluster(q, "--name", "long")
    quiet = qcluster(q, "--name", "quiet")
    url = metrics_url(long)
    from qhive_django.tasks import async_task

    async_task(ADD, 1, 2, cluster="long")
    counted = wait_until(lambda: (m := scrape(url)).value("qhive_tasks_total") == 1 and m,
                         within=60, what="the long cluster's result")
    assert counted.value("qhive_tasks_total", cluster="long", func=ADD, status="success") == 1
    assert counted.value("qhive_workers_configured", cluster="long") == 2
    assert not any(dict(labels)["cluster"] != "long" for _, labels in counted)
    assert "Prometheus" not in quiet.log()
    assert listening_ports(quiet.pid) == set()
    assert long.stop() == 0 and quiet.stop() == 0
