"""The cluster with real worker processes, on the in-memory broker and store.

The cluster runs in a thread of the test process (the in-memory drivers live
here); its workers are real processes. Cluster tests against real brokers and
databases, started as `manage.py qcluster`, live with the Django app.
"""

import gc
import logging
import os
import signal
import threading
import time
import uuid

import pytest
from qhive.cluster import Cluster
from qhive.config import Config
from qhive_testkit.qcluster import wait_until
from qhive_testkit.tasks import FAILURES

T = "qhive_testkit.tasks"


@pytest.fixture
def start_cluster(fresh_plugins):
    running = []

    def start(**settings):
        q_cluster = {"name": f"c{uuid.uuid4().hex[:8]}", "broker": "memory",
                     "result_store": "memory", "workers": 2, "save_limit": 0, **settings}
        cluster = Cluster(Config.from_dict(q_cluster, secret_key="cluster-secret"))
        thread = threading.Thread(target=cluster.run, daemon=True)
        thread.start()
        assert cluster.started.wait(60), "cluster did not start"
        running.append((cluster, thread))
        return cluster

    yield start
    for cluster, thread in running:
        cluster.stop()
        thread.join(60)
        assert not thread.is_alive(), "cluster did not stop"


def settled(broker):
    """Wait until every message is acknowledged: a worker saves a batch's results, then
    acknowledges them, so a result is seen a moment before its message is gone."""
    wait_until(lambda: broker.queue_size() == 0 and broker.lock_size() == 0, within=30,
               what="every message acknowledged")


def wait_for(store, task_ids, within=60.0):
    """Results of ``task_ids`` once all exist (fails after ``within`` s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = [store.get(t) for t in task_ids]
        if all(found):
            return found
        time.sleep(0.05)
    missing = [t for t, r in zip(task_ids, found, strict=True) if r is None]
    pytest.fail(f"{len(missing)} of {len(task_ids)} results missing after {within} s")


def busy_worker_pid(cluster, within=30.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for worker in cluster.workers:
            if worker.busy:
                return worker.process.pid
        time.sleep(0.01)
    pytest.fail("no worker took the task")


def test_drains_every_task_exactly_once(start_cluster):
    cluster = start_cluster()
    p = cluster.pipeline
    ids = [p.enqueue(f"{T}.add", (i, 1)) for i in range(1000)]
    results = wait_for(p.result_store, ids)
    assert [r.result for r in results] == [i + 1 for i in range(1000)]
    assert all(r.success and r.attempt_count == 1 for r in results)
    settled(p.broker)
    assert cluster.stat.processed == 1000



def test_the_sentinel_freezes_its_heap_while_it_runs_and_gives_it_back(start_cluster):
    # Frozen, a full collection leaves the pages shared with the workers alone; a process
    # that embeds the cluster (this one) gets its objects collected again afterwards.
    assert gc.get_freeze_count() == 0
    cluster = start_cluster()
    assert gc.get_freeze_count() > 0
    cluster.stop()
    assert cluster.stopped.wait(60)
    assert gc.get_freeze_count() == 0

def test_killed_worker_task_is_redelivered_after_retry(start_cluster):
    cluster = start_cluster(retry=1)
    p = cluster.pipeline
    task_id = p.enqueue(f"{T}.sleep", (1.5, "done"))
    os.kill(busy_worker_pid(cluster), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (r := p.result_store.get(task_id)) is None or not r.success:
        assert time.monotonic() < deadline, f"not redelivered: {r}"
        time.sleep(0.05)
    assert (r.result, r.attempt_count) == ("done", 2)  # the death counted as attempt 1
    assert cluster.stat.reincarnations >= 1
    assert len(cluster.stat.workers) == 2
    settled(p.broker)


def test_timeout_kills_on_time_whatever_the_guard_cycle(start_cluster):
    cluster = start_cluster(timeout=0.5, guard_cycle=0.3, ack_failures=True)
    p = cluster.pipeline
    started = time.monotonic()
    stuck = p.enqueue(f"{T}.sleep", (30,))
    [r] = wait_for(p.result_store, [stuck])
    assert r.success is False
    assert "exceeded maximum timeout value (0.5 seconds)" in r.result
    assert time.monotonic() - started < 20  # not after the task's 30 s
    quick = [p.enqueue(f"{T}.sleep", (1, "ok"), timeout=2.5),
             p.enqueue(f"{T}.sleep", (1, "ok"), timeout=None)]
    assert [r.result for r in wait_for(p.result_store, quick)] == ["ok", "ok"]
    assert cluster.stat.reincarnations == 1


@pytest.mark.parametrize(("func", "expected"), FAILURES.items())
def test_bad_tasks_fail_clearly_and_the_cluster_goes_on(start_cluster, func, expected):
    cluster = start_cluster(ack_failures=True)
    p = cluster.pipeline
    bad = p.enqueue(f"{T}.{func}", ())
    good = p.enqueue(f"{T}.add", (2, 2))
    bad_result, good_result = wait_for(p.result_store, [bad, good])
    assert bad_result.success is False and expected in bad_result.result
    assert good_result.result == 4
    settled(p.broker)


def test_max_attempts_two_with_a_task_that_always_dies(start_cluster):
    cluster = start_cluster(retry=0.5, max_attempts=2)
    p = cluster.pipeline
    task_id = p.enqueue(f"{T}.die", ())
    deadline = time.monotonic() + 60
    while (r := p.result_store.get(task_id)) is None or r.attempt_count < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(2.5)  # several retry periods: nothing more may happen
    r = p.result_store.get(task_id)
    assert (r.success, r.attempt_count) == (False, 2)
    settled(p.broker)
    assert cluster.stat.reincarnations == 2


def test_recycle_replaces_workers(start_cluster):
    cluster = start_cluster(recycle=3)
    first_pids = set(cluster.stat.workers)
    p = cluster.pipeline
    wait_for(p.result_store, [p.enqueue(f"{T}.add", (i, i)) for i in range(30)])
    # A worker exits after saving its third result: the sentinel replaces it just after.
    wait_until(lambda: cluster.stat.reincarnations >= 8, within=30, what="8 recycles")
    stat = cluster.stat
    assert not first_pids & set(stat.workers)


def test_max_rss_replaces_workers(start_cluster):
    cluster = start_cluster(max_rss=1)  # 1 KB: every worker is over it after a task
    p = cluster.pipeline
    wait_for(p.result_store, [p.enqueue(f"{T}.add", (i, i)) for i in range(6)])
    # the sentinel counts a worker's replacement when it sees it exit (within a tick)
    wait_until(lambda: cluster.stat.reincarnations >= 5, within=30, what="5 replacements")


def test_tampered_message_is_failed_and_never_run(start_cluster, tmp_path):
    cluster = start_cluster()
    p = cluster.pipeline
    marker = tmp_path / "ran"
    package = bytearray(p.codec.encode({"id": "t" * 32, "func": "pathlib.Path.touch",
                                        "args": (marker,), "kwargs": {}}))
    package[40] ^= 0x10
    p.broker.enqueue(bytes(package))
    ok = p.enqueue(f"{T}.add", (1, 1))
    wait_for(p.result_store, [ok])
    assert not marker.exists()
    assert p.result_store.get("t" * 32) is None
    settled(p.broker)


def test_stop_under_load_loses_nothing(start_cluster):
    cluster = start_cluster(retry=600)
    p = cluster.pipeline
    ids = [p.enqueue(f"{T}.sleep", (0.05, i)) for i in range(200)]
    time.sleep(1)
    cluster.stop()
    assert cluster.stopped.wait(60)
    done = sum(p.result_store.get(t) is not None for t in ids)
    waiting = p.broker.queue_size() + p.broker.lock_size()
    assert 0 < done < 200
    assert done + waiting == 200, (done, waiting)
    assert p.broker.lock_size() == 0  # taken-but-not-started tasks were given back


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="cpu affinity needs two cores")
def test_cpu_affinity_pins_each_worker(start_cluster):
    import psutil

    cluster = start_cluster(cpu_affinity=1)
    pinned = [psutil.Process(pid).cpu_affinity() for pid in cluster.stat.workers]
    assert pinned == [[0], [1]]


def run_until_stopped(cluster, within=120.0):
    """Run ``cluster`` in a thread; return its exit code once it stops by itself."""
    codes = []
    thread = threading.Thread(target=lambda: codes.append(cluster.run()), daemon=True)
    thread.start()
    thread.join(within)
    if thread.is_alive():
        cluster.stop()
        cluster.stop()
        thread.join(60)
        pytest.fail(f"the cluster did not stop by itself within {within} s")
    return codes[0]


def make_cluster(**settings):
    q_cluster = {"name": f"c{uuid.uuid4().hex[:8]}", "broker": "memory",
                 "result_store": "memory", "workers": 2, "guard_cycle": 0.1, **settings}
    return Config.from_dict(q_cluster, secret_key="cluster-secret")


def test_a_sentinel_thread_that_dies_stops_the_cluster_non_zero(fresh_plugins, monkeypatch,
                                                                 caplog):
    from qhive.cluster.monitor import Monitor

    def broken(self):
        raise RuntimeError("monitor bug")

    monkeypatch.setattr(Monitor, "_run", broken)
    with caplog.at_level(logging.CRITICAL, logger="qhive.cluster"):
        assert run_until_stopped(Cluster(make_cluster())) == 1
    assert "the monitor thread stopped unexpectedly (RuntimeError: monitor bug); stopping the " \
           "cluster" in caplog.text


def test_a_watched_thread_that_ends_stops_the_cluster_non_zero(fresh_plugins, caplog):
    cluster = Cluster(make_cluster())
    activity = threading.Thread(target=lambda: time.sleep(1), daemon=True)
    cluster.watch(activity, "scheduler")
    threading.Thread(target=lambda: cluster.started.wait(60) and activity.start(),
                     daemon=True).start()
    with caplog.at_level(logging.CRITICAL, logger="qhive.cluster"):
        assert run_until_stopped(cluster) == 1
    assert "the scheduler thread stopped unexpectedly" in caplog.text


def test_workers_that_die_as_they_start_stop_the_cluster_with_the_cause(fresh_plugins,
                                                                         caplog):
    cluster = Cluster(make_cluster(), setup="qhive_testkit.tasks.boom")
    with caplog.at_level(logging.ERROR, logger="qhive.cluster"):
        assert run_until_stopped(cluster) == 1
    assert "workers die as they start (3 in a row): ValueError: boom; stopping the cluster" \
           in caplog.text


def test_a_failing_store_holds_the_intake_and_renews_receipts(fresh_plugins, monkeypatch):
    """While results cannot be saved a worker takes no new task (each holds what it took:
    ``queue_limit / workers``), and no task runs twice although ``retry`` passes several
    times."""
    from qhive.builtin.memory import MemoryResultStore

    down = threading.Event()
    down.set()
    save_many = MemoryResultStore.save_many

    def failing(self, results):
        if down.is_set():
            raise ConnectionError("store down")
        return save_many(self, results)

    monkeypatch.setattr(MemoryResultStore, "save_many", failing)
    cluster = Cluster(make_cluster(retry=1, queue_limit=3))
    thread = threading.Thread(target=cluster.run, daemon=True)
    thread.start()
    assert cluster.started.wait(60)
    p = cluster.pipeline
    ids = [p.enqueue(f"{T}.add", (i, 1)) for i in range(50)]
    # Each worker learns that the store fails at its first save, holding one task
    # (queue_limit 3 / 2 workers); from then on it takes nothing.
    wait_until(lambda: cluster.counters()["unsaved"] == 2, within=60,
               what="both workers holding a result")
    time.sleep(4)  # four 'retry' periods
    counted = cluster.counters()
    assert counted["unsaved"] == 2 and counted["store_errors"] >= 4
    assert p.broker.queue_size() == 48
    down.clear()
    results = wait_for(p.result_store, ids)
    assert all(r.attempt_count == 1 for r in results)  # no failure, no second delivery
    wait_until(lambda: cluster.stat.processed == 50, within=30, what="50 processed")
    cluster.stop()
    thread.join(60)


def test_outage_back_off_stays_short():
    from qhive.cluster.outage import MAX_BACKOFF, Outage

    outage = Outage("broker")
    delays = [outage.failed(ConnectionError("down"), "test") for _ in range(30)]
    assert max(delays) == MAX_BACKOFF <= 2.0 and delays[0] < 0.5
