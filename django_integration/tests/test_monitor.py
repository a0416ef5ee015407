"""Monitoring in the test process: ``qhive_django.monitor.Stat`` on the real ORM
broker (SQLite, PostgreSQL, MariaDB) and on Redis, and ``qmonitor``, ``qinfo`` and
``qmemory`` called through ``call_command`` against stats saved here.

Real clusters under ``qmonitor`` in a terminal are in ``tests/test_monitor_commands.py``.
"""

import datetime as dt
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from qhive.builtin.memory import MemoryBroker
from qhive.cluster.stat import IDLE, STOPPED, WORKING
from qhive.cluster.stat import Stat as CoreStat
from qhive.errors import BrokerConnectionError
from qhive_django import monitor
from qhive_django.conf import get_pipeline
from qhive_django.monitor import Stat
from qhive_testkit.services import RedisServer, redis_url, require

HOST = socket.gethostname()


def save_stat(q, *, name=None, host=HOST, pid=4242, ttl=60, **fields):
    """Save a stat of a cluster of project ``q["name"]`` through the configured broker."""
    stat = CoreStat(uuid.uuid4().hex, name or q["name"], host, pid, **fields)
    stat.save(get_pipeline().broker, q["name"], ttl=ttl)
    return stat


def run(*args, **options):
    out = io.StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


def row_of(output, stat):
    """The line of ``output`` showing ``stat`` (found by its short id), split in cells."""
    lines = [line.split() for line in output.splitlines() if stat.short_id in line]
    assert len(lines) == 1, output
    return lines[0]


# --------------------------------------------------------------------------- Stat


def check_stats_round_trip(q):
    root = save_stat(q, pid=101, workers=[11, 12], reincarnations=2, status=WORKING,
                     task_q_size=3, done_q_size=1, configured_workers=2, queue_limit=4)
    alt = save_stat(q, name="long", pid=102, workers=[21])
    other_project = CoreStat(uuid.uuid4().hex, "elsewhere", HOST, 103)
    other_project.save(get_pipeline().broker, f"{q['name']}x", ttl=60)

    stats = Stat.get_all()
    assert [(s.cluster_id, s.name) for s in stats] == [(alt.cluster_id, "long"),
                                                       (root.cluster_id, q["name"])]
    assert all(isinstance(s, Stat) for s in stats)

    got = Stat.get(root.cluster_id)
    assert isinstance(got, Stat)
    assert (got.host, got.status, got.workers, got.reincarnations) == \
        (HOST, WORKING, [11, 12], 2)
    assert (got.sentinel, got.pusher, got.monitor) == (101, 101, 101)
    assert (got.task_q_size, got.done_q_size, got.empty_queues()) == (3, 1, False)
    assert got.uptime() >= 0 and got.tob == pytest.approx(root.tob)
    assert Stat.get(root.cluster_id, broker=get_pipeline().broker) == got

    missing = Stat.get(uuid.uuid4().hex)  # as in Django Q: a placeholder, not None
    assert (missing.status, missing.workers) == (STOPPED, [])


def test_stat_through_the_orm_broker(database, q_cluster):
    check_stats_round_trip(q_cluster(memory=False, orm=database, result_store="memory"))


def test_stat_through_the_redis_broker(q_cluster):
    require("redis")
    check_stats_round_trip(
        q_cluster(memory=False, redis=redis_url(), result_store="memory"))


def test_stat_of_a_cluster_that_stopped_expires(q_cluster):
    q = q_cluster()
    stat = save_stat(q, ttl=0.05)
    deadline = time.monotonic() + 10
    while Stat.get_all() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert Stat.get_all() == []
    assert Stat.get(stat.cluster_id).status == STOPPED


# --------------------------------------------------------------------------- qmonitor


def test_qmonitor_run_once_shows_every_cluster_of_the_project(q_cluster):
    q = q_cluster()
    full = save_stat(q, workers=[1, 2, 3], configured_workers=3, status=WORKING, task_q_size=5,
                     done_q_size=2, reincarnations=4, tob=1000.0)
    alt = save_stat(q, name="long", host="elsewhere", workers=[7], configured_workers=2)
    broker = get_pipeline().broker
    broker.enqueue(b"one")
    broker.enqueue(b"two")
    broker.dequeue()  # one in flight: Queued shows 1(1)

    output = run("qmonitor", "--run-once")

    assert output.splitlines()[0].split() == ["Host", "Id", "Cluster", "State", "Pool", "TQ",
                                              "RQ", "RC", "Up"]
    cells = row_of(output, full)
    assert cells[:8] == [HOST, full.cluster_id[-8:], q["name"], "Working", "3", "5", "2", "4"]
    assert re.fullmatch(r"\d+:\d\d:\d\d", cells[8])  # saved now, born at 1000: many hours
    assert row_of(output, alt)[:5] == ["elsewhere", alt.short_id, "long", "Starting", "1"]
    bar = next(line for line in output.splitlines() if "Queued" in line).split()
    assert bar == ["Memory", "Queued", "1(1)", "Success", "-", "Failures", "-"]
    assert "[Press q to quit]" not in output  # run once: nothing to press


def test_qmonitor_without_clusters_says_so(q_cluster):
    q_cluster()
    assert "No clusters appear to be running." in run("qmonitor", "--run-once")


def test_qmonitor_counts_results_of_the_orm_store(q_cluster):
    q_cluster(broker="memory", result_store="orm", memory=False)
    from qhive_store_orm.models import Task

    with transaction.atomic():
        Task.objects.all().delete()
        add_tasks([True, True, False])
        output = run("qmonitor", "--run-once")
        transaction.set_rollback(True)
    bar = next(line for line in output.splitlines() if "Queued" in line).split()
    assert bar[-4:] == ["Success", "2", "Failures", "1"]


def test_monitor_returns_the_stats_it_showed(q_cluster):
    q = q_cluster()
    stat = save_stat(q)
    shown = monitor.monitor(run_once=True, stream=io.StringIO())
    assert [s.cluster_id for s in shown] == [stat.cluster_id]


class FlakyBroker(MemoryBroker):
    """A memory broker whose statistics fail on the calls numbered in ``failing``."""

    def __init__(self, queue, failing):
        super().__init__(queue)
        self.calls = 0
        self.failing = failing

    def get_stats(self, prefix):
        self.calls += 1
        if self.calls in self.failing:
            raise BrokerConnectionError("the broker went away for a moment")
        return super().get_stats(prefix)


def press(monkeypatch, *keys):
    """Make blessed read ``keys`` one per refresh (an empty key: no key pressed; an
    exception is raised; a callable is called, then no key pressed)."""
    import blessed

    pending = list(keys)

    def inkey(self, timeout=None, **kwargs):
        key = pending.pop(0)
        if isinstance(key, BaseException):
            raise key
        if callable(key):
            key()
            return ""
        return key

    monkeypatch.setattr(blessed.Terminal, "inkey", inkey)


def test_qmonitor_outlives_a_broker_error_and_quits_on_q(q_cluster, monkeypatch):
    q = q_cluster()
    stat = save_stat(q, status=IDLE, workers=[1])
    broker = FlakyBroker(q["name"], failing={2})
    press(monkeypatch, "", "", "Q")
    out = io.StringIO()

    shown = monitor.monitor(broker=broker, stream=out)

    frames = out.getvalue().split("[Press q to quit]\n")
    assert len(frames) == 4 and frames[3] == ""  # three screens, then q
    assert "went away" not in frames[0] and stat.short_id in frames[0]
    assert "stats: BrokerConnectionError: the broker went away for a moment" in frames[1]
    assert stat.short_id in frames[1]  # the last stats stay on screen
    assert "went away" not in frames[2]
    assert [s.cluster_id for s in shown] == [stat.cluster_id]


def test_qmonitor_outlives_a_redis_that_stops_for_a_moment(q_cluster, monkeypatch, tmp_path):
    server = RedisServer(tmp_path).start()  # its own Redis: the shared one must stay up
    try:
        q = q_cluster(memory=False, redis=server.url, result_store="memory")
        stat = save_stat(q, ttl=600)  # kept in Redis's append-only file across the restart
        press(monkeypatch, server.stop, server.start, "q")
        out = io.StringIO()
        shown = monitor.monitor(stream=out)
    finally:
        server.stop()
    frames = out.getvalue().split("[Press q to quit]\n")
    assert len(frames) == 4, out.getvalue()
    assert "Error" not in frames[0] and stat.short_id in frames[0]
    assert "stats: BrokerConnectionError" in frames[1] and stat.short_id in frames[1]
    assert "Error" not in frames[2] and stat.short_id in frames[2]
    assert [s.cluster_id for s in shown] == [stat.cluster_id]


def test_qmonitor_quits_cleanly_on_ctrl_c(q_cluster, monkeypatch):
    q = q_cluster()
    save_stat(q)
    press(monkeypatch, "", KeyboardInterrupt())
    out = io.StringIO()
    assert len(monitor.monitor(stream=out)) == 1
    assert out.getvalue().count("[Press q to quit]") == 2


class DeadBroker(MemoryBroker):
    def ping(self):
        raise BrokerConnectionError("Connection refused")


@pytest.mark.parametrize("command", ["qmonitor", "qinfo", "qmemory"])
def test_commands_refuse_an_unreachable_broker(q_cluster, command):
    q_cluster(memory=False, redis="redis://127.0.0.1:1/0", result_store="memory")
    with pytest.raises(CommandError, match=r"cannot reach the broker \(RedisBroker.*Is its "
                                           r"server running"):
        run(command, "--run-once") if command != "qinfo" else run(command)


def test_functions_refuse_an_unreachable_broker(q_cluster):
    q_cluster()
    with pytest.raises(BrokerConnectionError, match="Connection refused"):
        monitor.monitor(run_once=True, broker=DeadBroker(), stream=io.StringIO())
    with pytest.raises(BrokerConnectionError, match="Connection refused"):
        monitor.info(broker=DeadBroker(), stream=io.StringIO())


# --------------------------------------------------------------------------- qinfo


def add_tasks(outcomes, *, ago=dt.timedelta(minutes=5), took=dt.timedelta(seconds=1),
              using="default"):
    from qhive_store_orm.models import Task

    stopped = timezone.now() - ago
    Task.objects.using(using).bulk_create(
        Task(id=uuid.uuid4().hex, name=f"n{i}", func="math.floor", started=stopped - took,
             stopped=stopped, success=success)
        for i, success in enumerate(outcomes)
    )


def cells_after(output, label):
    """The value printed right after ``label`` in qinfo's table."""
    match = re.search(rf"(?:^|\s){re.escape(label)}\s+(\S+)", output, re.M)
    assert match, output
    return match.group(1)


def test_qinfo_summary(database, q_cluster):
    from qhive_django.models import Schedule
    from qhive_store_orm.models import Task

    q = q_cluster(broker="memory", result_store="orm",
                  result_store_options={"database": database}, memory=False)
    save_stat(q, workers=[1, 2, 3], reincarnations=2)
    save_stat(q, name="long", workers=[4], reincarnations=1)
    get_pipeline().broker.enqueue_many([b"a", b"b"])
    with transaction.atomic(using=database), transaction.atomic(using="default"):
        # Only this test's rows count: the others are deleted, and all comes back after.
        Task.objects.using(database).all().delete()
        Schedule.objects.all().delete()
        add_tasks([True] * 3, took=dt.timedelta(seconds=1), using=database)
        add_tasks([True] * 3, took=dt.timedelta(seconds=3), using=database)
        add_tasks([True], ago=dt.timedelta(days=2), took=dt.timedelta(seconds=100),
                  using=database)  # too old for the rate and the average
        add_tasks([False] * 2, using=database)
        Schedule.objects.create(func="math.floor", repeats=-1)
        Schedule.objects.create(func="math.floor", repeats=0)  # paused: not counted
        output = run("qinfo")
        transaction.set_rollback(True, using="default")
        transaction.set_rollback(True, using=database)

    assert output.splitlines()[0] == f"-- {q['name']} qhive 0.1.0 on Memory --"
    numbers = {label: cells_after(output, label) for label in (
        "Clusters", "Workers", "Restarts", "Queued", "Successes", "Failures", "Schedules",
        "Tasks/day", "Avg time")}
    assert numbers == {"Clusters": "2", "Workers": "4", "Restarts": "3", "Queued": "2",
                       "Successes": "7", "Failures": "2", "Schedules": "1",
                       "Tasks/day": "6.00", "Avg time": "2.0000"}


@pytest.mark.parametrize(("per_day", "expected"), [
    (0, (0.0, "day")), (24, (24.0, "day")), (48, (2.0, "hour")), (2880, (2.0, "minute")),
    (172800, (2.0, "second")),  # Django Q2 shows 207360000000 here
])
def test_task_rate_unit(per_day, expected):
    assert monitor._rate(per_day) == pytest.approx(expected)


def test_qinfo_without_orm_results_shows_dashes(q_cluster):
    q_cluster()
    output = run("qinfo")
    assert (cells_after(output, "Successes"), cells_after(output, "Avg time")) == ("-", "-")
    assert cells_after(output, "Clusters") == "0"


@pytest.mark.parametrize("redis", [
    "redis://:s3cr3t-pw@127.0.0.1:6390/0",
    {"host": "127.0.0.1", "port": 6390, "password": "s3cr3t-pw"},
])
def test_qinfo_config_masks_secrets(django_project, redis):
    # Port 6390: nothing listens there — --config must not need the broker.
    q = {"name": f"t{uuid.uuid4().hex[:12]}", "redis": redis, "result_store": "memory",
         "workers": 3}
    with override_settings(SECRET_KEY="the-django-secret-key-value", Q_CLUSTER=q):
        output = run("qinfo", "--config")
    assert "s3cr3t-pw" not in output
    assert "the-django-secret-key-value" not in output
    lines = output.splitlines()
    assert lines[0] == "VERSION: qhive 0.1.0"
    assert "workers: 3" in lines and "broker: redis" in lines
    assert "127.0.0.1" in output and "********" in output
    keys = {line.split(":", 1)[0] for line in lines[1:]}
    assert {"name", "timeout", "retry", "queue_limit", "redis", "ALT_CLUSTERS"} <= keys


def test_qinfo_ids(q_cluster):
    q = q_cluster()
    assert run("qinfo", "--ids") == "No clusters appear to be running.\n"
    first, second = save_stat(q, pid=1), save_stat(q, pid=2)
    assert run("qinfo", "--ids", "--config").split() == [first.cluster_id, second.cluster_id]


# --------------------------------------------------------------------------- qmemory


def test_qmemory_measures_local_clusters_and_not_others(q_cluster):
    import psutil

    q = q_cluster()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A sentinel whose worker is forked by another process: the test process is the
        # worker, its parent stands for the zygote.
        here = save_stat(q, pid=child.pid, workers=[os.getpid()])
        away = save_stat(q, host="other-machine", pid=os.getpid(), workers=[1, 2])
        output = run("qmemory", "--run-once", "--workers")
    finally:
        child.kill()
        child.wait()

    header = re.split(r"\s{2,}", output.splitlines()[0].strip())
    assert header == ["Host", "Id", "Available (%)", "Available (MB)", "Total (MB)",
                      "Sentinel (MB)", "Zygote (MB)", "Workers (MB)", "Worker #1 (MB)",
                      "Worker #2 (MB)"]
    cells = row_of(output, here)
    assert cells[:2] == [HOST, here.short_id]
    percent, available, total, sentinel, _zygote, workers, worker1, worker2 = cells[2:]
    assert 0 < float(percent) <= 100 and 0 < float(available) <= float(total)
    assert float(sentinel) > 0 and float(workers) == float(worker1) > 0
    assert worker2 == "-"  # this cluster has one worker
    mine = psutil.Process().memory_info().rss / 1e6
    assert float(workers) == pytest.approx(mine, rel=0.5)
    away_cells = row_of(output, away)  # "other host" is two words once split
    assert away_cells[:4] == ["other-machine", away.short_id, "other", "host"]
    assert set(away_cells[4:]) == {"-"}
    footer = re.search(r"Lowest available memory: ([\d.]+) % \(([\d.]+) MB\) at "
                       r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)$", output, re.M)
    assert footer, output
    assert float(footer.group(1)) == pytest.approx(float(percent), abs=5)


def test_qmemory_returns_the_stats(q_cluster):
    q = q_cluster()
    stat = save_stat(q, pid=os.getpid())
    shown = monitor.memory(run_once=True, stream=io.StringIO())
    assert [s.cluster_id for s in shown] == [stat.cluster_id]


def test_qmonitor_highlights_a_short_pool_and_a_full_task_queue():
    import blessed

    term = blessed.Terminal(kind="xterm-256color", force_styling=True, stream=io.StringIO())
    short = CoreStat("a" * 32, "n", HOST, 1, workers=[1], configured_workers=2, task_q_size=2,
                     busy=1, queue_limit=4)
    full = CoreStat("b" * 32, "n", HOST, 1, workers=[1, 2], configured_workers=2, task_q_size=3,
                    busy=1, queue_limit=4)
    short_cells, full_cells = monitor._monitor_row(term, short), monitor._monitor_row(term, full)
    assert short_cells[4] == term.yellow("1") != "1"  # a worker is missing
    assert full_cells[4] == "2"
    assert short_cells[5] == "2"
    assert full_cells[5] == term.green("3") != "3"  # at queue_limit: takes no more tasks


def test_sigterm_during_a_guarded_read_ends_the_live_screen():
    """SIGTERM that lands inside a read of the screen (a slow query) stops the live
    screen; it used to be taken for a failed read, and the screen went on for ever."""
    frames = []

    def frame():
        frames.append(time.monotonic())
        errors: list[str] = []
        monitor._attempt(errors, "stats",
                         lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(1)), None)
        return ["a screen"]

    # Were SIGTERM swallowed, Ctrl-C would end the screen after a few more frames.
    watchdog = threading.Timer(5, os.kill, (os.getpid(), signal.SIGINT))
    watchdog.start()
    try:
        stream = io.StringIO()
        monitor._live(monitor._terminal(stream), stream, frame)
    finally:
        watchdog.cancel()
    assert len(frames) == 1, f"{len(frames)} frames after SIGTERM"
