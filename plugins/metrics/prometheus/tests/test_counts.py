"""The count directory without a cluster: real worker processes count in
prometheus_client's multiprocess mode and exit, the test process plays the sentinel.
What the sentinel writes itself adds up with what workers wrote, sample by sample;
the files of exited workers fold into the sentinel's without changing a value; only
the plugin's metrics of its own cluster are served; a directory of the environment
keeps the files that hold metrics of others.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

WORKER = textwrap.dedent("""
    import sys
    from prometheus_client import Counter
    from qhive_metrics_prometheus.options import Options
    from qhive_metrics_prometheus.taskmetrics import Observation, WorkerTaskMetrics

    metrics = WorkerTaskMetrics("mine", Options(port=0))
    for _ in range(int(sys.argv[1])):
        metrics.add(Observation("app.f", "success", 0.3, 2.0))
    metrics.add(Observation("app.g", "failure", None, None))
    if sys.argv[2] == "foreign":  # what the project's own code counts in a worker
        Counter("project_things", "Things.", registry=None).inc()
        WorkerTaskMetrics("theirs", Options(port=0)).add(Observation("app.f", "success", 1, 1))
""")


def run_worker(directory: Path, results: int, foreign: bool = False) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", WORKER, str(results), "foreign" if foreign else ""],
                   env=env, check=True)


@pytest.fixture(params=["own", "environment's"])
def counts(request, tmp_path, monkeypatch):
    from qhive_metrics_prometheus.counts import CountDirectory
    from qhive_metrics_prometheus.options import Options

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    if request.param == "environment's":
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    directory = CountDirectory("mine", Options(port=0))
    directory.open()
    yield directory
    directory.close(remove=True)
    assert "QHIVE_PROMETHEUS_CLUSTER" not in os.environ
    assert Path(directory.path).exists() == (request.param == "environment's")


def served(counts) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in counts.collect() for s in family.samples}


def sample(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset({"cluster": "mine", **labels}.items())


def test_the_sentinel_adds_up_with_the_workers_and_folding_changes_no_value(counts):
    from qhive_metrics_prometheus.taskmetrics import Observation

    directory = Path(counts.path)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == counts.path
    assert os.environ["QHIVE_PROMETHEUS_CLUSTER"] == "mine"
    run_worker(directory, 3)
    run_worker(directory, 4)
    for _ in range(2):  # a task whose worker died: saved and counted by the sentinel
        counts.add(Observation("app.f", "success", 0.3, 2.0))

    first = served(counts)  # the two exited workers' files fold into the sentinel's
    assert first[sample("qhive_tasks_total", func="app.f", status="success")] == 9
    assert first[sample("qhive_tasks_total", func="app.g", status="failure")] == 2
    assert first[sample("qhive_task_run_seconds_bucket", func="app.f", le="0.25")] == 0
    assert first[sample("qhive_task_run_seconds_bucket", func="app.f", le="0.5")] == 9
    assert first[sample("qhive_task_run_seconds_bucket", func="app.f", le="+Inf")] == 9
    assert first[sample("qhive_task_run_seconds_count", func="app.f")] == 9
    assert first[sample("qhive_task_run_seconds_sum", func="app.f")] == pytest.approx(2.7)
    assert first[sample("qhive_task_queue_wait_seconds_bucket", le="1.0")] == 0
    assert first[sample("qhive_task_queue_wait_seconds_bucket", le="2.5")] == 9
    assert first[sample("qhive_task_queue_wait_seconds_count")] == 9
    # Every bucket of both histograms, as prometheus_client writes them.
    assert sum(1 for n, _ in first if n == "qhive_task_run_seconds_bucket") == 17
    assert sum(1 for n, _ in first if n == "qhive_task_queue_wait_seconds_bucket") == 16
    assert sorted(p.name for p in directory.glob("*.db")) == [
        f"counter_qhive-sentinel-{os.getpid()}.db", f"histogram_qhive-sentinel-{os.getpid()}.db"]

    run_worker(directory, 1)
    again = served(counts)
    assert again[sample("qhive_tasks_total", func="app.f", status="success")] == 10
    assert again[sample("qhive_task_run_seconds_count", func="app.f")] == 10
    assert again.keys() == first.keys()


def test_only_the_plugins_metrics_of_its_cluster_are_served(counts):
    directory = Path(counts.path)
    run_worker(directory, 2, foreign=True)
    found = served(counts)
    assert {dict(labels)["cluster"] for _, labels in found} == {"mine"}
    assert not any(name.startswith("project_") for name, _ in found)
    assert found[sample("qhive_tasks_total", func="app.f", status="success")] == 2
    left = sorted(p.name.split("_")[0] for p in directory.glob("*.db"))
    if counts.owned:  # all folded: the project's metric is not ours to serve
        assert left == ["counter", "histogram"]
    else:  # the worker's counter file, with the project's value, stays for its exporter
        assert left == ["counter", "counter", "histogram"]
    assert served(counts) == found


# A cluster's zygote: prometheus_client imported in-process (before the sentinel set the
# variable), then forks of it given the sentinel's environment, one worker after the
# other (the second replaces the first, recycled).
ZYGOTE = textwrap.dedent("""
    import os
    import sys
    import prometheus_client  # noqa: F401 -- imported without the variable: in-process
    from qhive_metrics_prometheus.options import Options
    from qhive_metrics_prometheus.taskmetrics import Observation, WorkerTaskMetrics

    environ = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": sys.argv[1],
               "QHIVE_PROMETHEUS_CLUSTER": "mine"}
    for results in (3, 4):
        pid = os.fork()
        if pid == 0:  # a worker, as zygote._run_child makes it
            os.environ.clear()
            os.environ.update(environ)
            metrics = WorkerTaskMetrics("mine", Options(port=0))
            for _ in range(results):
                metrics.add(Observation("app.f", "success", 0.3, 2.0))
            os._exit(0)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        print(pid)
    from prometheus_client import values
    assert not values.ValueClass._multiprocess  # the zygote stays as it was
""")


def test_forks_of_an_in_process_zygote_count_in_files_of_their_pids(counts):
    directory = Path(counts.path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PROMETHEUS_MULTIPROC_DIR", "QHIVE_PROMETHEUS_CLUSTER")}
    out = subprocess.run([sys.executable, "-c", ZYGOTE, str(directory)], env=env, check=True,
                         capture_output=True, text=True).stdout
    first, second = (int(pid) for pid in out.split())
    assert first != second
    assert sorted(p.name for p in directory.glob(f"*_{first}.db")) == [
        f"counter_{first}.db", f"histogram_{first}.db"]
    assert sorted(p.name for p in directory.glob(f"*_{second}.db")) == [
        f"counter_{second}.db", f"histogram_{second}.db"]
    found = served(counts)  # both folded: exited
    assert found[sample("qhive_tasks_total", func="app.f", status="success")] == 7
    assert found[sample("qhive_task_run_seconds_count", func="app.f")] == 7
    assert found[sample("qhive_task_queue_wait_seconds_count")] == 7
