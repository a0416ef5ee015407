"""Real ``manage.py qcluster`` processes with the plugin, scraped over HTTP as Prometheus
would: counters move during a run and end equal to the result store's counts, whether
a worker, or the sentinel for a worker that died, saved the result; they keep counting
exactly as workers recycle, while the files of exited workers are folded away; each
worker counts in files of its own pid, a replacement in its own, also when the project
imported ``prometheus_client`` before the cluster started (in-process mode in the
zygote the workers are forked from); the count directory is the cluster's own, logged
once, and gone after the stop (or the environment's own, kept); the queue size and
worker gauges follow a cluster held busy by gated tasks; a cluster without the setting,
or whose port is taken, runs on without opening a port or making a directory, and its
workers count nothing; bad options stop ``qcluster`` at its checks; ``ALT_CLUSTERS``
entries have settings of their own.

Workers never exec (they are forks of the cluster's zygote, given the sentinel's
environment as they start), so ``/proc/PID/environ`` does not show what they were
given: the tests look at the directory the sentinel logged, and at its files.
"""

from __future__ import annotations

import re
import signal
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from qhive_testkit.outcomes import enqueue_many, tasks_of
from qhive_testkit.qcluster import wait_until

T = "qhive_testkit.tasks"
ADD, BOOM, DIE = f"{T}.add", f"{T}.boom", f"{T}.die"
GATE = "prometheus_gate.wait_for"
COUNTING = re.compile(r"^.* counting worker metrics for Prometheus in (.+)$", re.MULTILINE)


def store_counts(q: dict) -> tuple[int, int]:
    """(successes, failures) the result store holds for the cluster."""
    rows = tasks_of(q)
    return rows.filter(success=True).count(), rows.filter(success=False).count()


def count_directory(cluster) -> Path:
    """The directory the cluster's workers count in, as its sentinel logged it (once)."""
    found = COUNTING.findall(cluster.log())
    assert len(found) == 1, cluster.log()
    return Path(found[0])


def counts_nowhere(cluster) -> None:
    """The cluster gave its workers no directory to count in: none logged, none made
    (the sentinel names its directory after its pid), no worker tried."""
    log = cluster.log()
    assert not COUNTING.search(log), log
    assert "cannot count" not in log, log
    made = Path(tempfile.gettempdir()).glob(f"qhive-prometheus-{cluster.pid}-*")
    assert list(made) == []


def owners(directory: Path) -> dict[str, list[str]]:
    """The count files in ``directory``, by owner (a pid, or ``qhive-sentinel-<pid>``):
    ``{"1234": ["counter", "histogram"]}``."""
    found: dict[str, list[str]] = {}
    for path in sorted(directory.glob("*.db")):
        kind, _, owner = path.stem.partition("_")
        found.setdefault(owner, []).append(kind)
    return found


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

    # A private directory, holding the sentinel's files (it counted the two dead workers'
    # tasks) and those of workers; gone once the cluster exits.
    directory = count_directory(cluster)
    assert directory.is_dir() and oct(directory.stat().st_mode & 0o777) == "0o700"
    assert directory.name.startswith(f"qhive-prometheus-{cluster.pid}-")
    files = owners(directory)
    assert files.pop(f"qhive-sentinel-{cluster.pid}") == ["counter", "histogram"]
    assert all(owner.isdigit() for owner in files), files  # workers' (folded once exited)
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

    # Left once a scrape folded the files of the last workers to exit: the sentinel's
    # own pair, and the files of the (two) workers running.
    sentinel = f"qhive-sentinel-{cluster.pid}"

    def folded():
        scrape(url)
        files = owners(directory)
        live = {str(p.pid) for p in psutil.Process(cluster.pid).children(recursive=True)}
        return set(files) <= {sentinel, *live} and files

    files = wait_until(folded, within=30, what="the files of exited workers folded")
    assert files[sentinel] == ["counter", "histogram"] and len(files) <= 1 + 2, files
    assert scrape(url).value("qhive_tasks_total") == 140  # what was folded still counts
    assert cluster.stop() == 0
    assert not directory.exists()


@pytest.mark.parametrize("project", ["imports prometheus_client", "does not"])
def test_each_worker_counts_in_files_of_its_pid_and_a_replacement_in_its_own(
        cluster_settings, qcluster, metrics_url, scrape, tmp_path, project):
    # queue_limit 1: a worker takes one task at a time, so two gated tasks hold both
    # workers, one each. recycle 2: a worker is replaced after its second task.
    q = cluster_settings(queue_limit=1, recycle=2, plugins={"prometheus": {"port": 0}})
    env = {}
    if project == "imports prometheus_client":  # in-process mode in the zygote
        env = {"DJANGO_SETTINGS_MODULE": "prometheus_imported_settings"}
    cluster = qcluster(q, env=env)
    url, name = metrics_url(cluster), q["name"]
    directory = count_directory(cluster)
    sentinel = f"qhive-sentinel-{cluster.pid}"

    def two_gated_tasks(round_: int) -> set[str]:
        """The pids of the two workers that ran them, once both results are counted."""
        gates = [tmp_path / f"gate {round_}.{n}" for n in (1, 2)]
        ids = enqueue_many(GATE, [(str(gate),) for gate in gates]).keys()

        def both_running():  # in a stat saved since (an older one shows the last round)
            running = [t for t in cluster.stat().running if t["id"] in ids]
            return len(running) == 2 and running

        running = wait_until(both_running, within=60, what="two gated tasks running")
        for gate in gates:
            gate.touch()
        wait_until(lambda: scrape(url).value("qhive_tasks_total", cluster=name) == 2 * round_,
                   within=60, what=f"{2 * round_} results counted")
        return {str(task["worker"]) for task in running}

    first = two_gated_tasks(1)
    assert len(first) == 2
    assert owners(directory) == {sentinel: ["counter", "histogram"],
                                 **{pid: ["counter", "histogram"] for pid in first}}
    assert two_gated_tasks(2) == first  # their second task: both are recycled
    replacements = two_gated_tasks(3)
    assert len(replacements) == 2 and not replacements & first
    # The recycled workers' files fold into the sentinel's at a scrape once they exited.
    files = wait_until(lambda: scrape(url) and (found := owners(directory)).keys().isdisjoint(
        first) and found, within=30, what="the recycled workers' files folded")
    assert files == {sentinel: ["counter", "histogram"],
                     **{pid: ["counter", "histogram"] for pid in replacements}}

    counted = scrape(url)
    assert store_counts(q) == (6, 0)
    assert counted.value("qhive_tasks_total", cluster=name, func=GATE, status="success") == 6
    assert counted.value("qhive_tasks_total", cluster=name) == 6
    assert counted.value("qhive_task_run_seconds_count", cluster=name, func=GATE) == 6
    assert counted.value("qhive_task_queue_wait_seconds_count", cluster=name) == 6
    assert counted.value("qhive_worker_restarts_total", cluster=name) == 2
    assert "cannot count" not in cluster.log()
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
    workers = [owner for owner in owners(mine) if owner.isdigit()]
    assert workers and all(int(pid) in cluster.stat().workers for pid in workers), workers
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
    enqueue_many(GATE, [(str(gate),) for gate in gates])
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
    assert final.value("qhive_tasks_total", func=GATE,
                       status="success") == 2
    assert store_counts(q) == (7, 0)

    # The server stops as the cluster's stop begins, while running tasks still finish.
    second = tmp_path / "second gate"
    enqueue_many(GATE, [(str(second),)])
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
    counts_nowhere(cluster)
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
    counts_nowhere(cluster)
    assert not (tmp_path / "missing").exists()
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
    counts_nowhere(quiet)
    assert count_directory(long).is_dir()
    assert long.stop() == 0 and quiet.stop() == 0
