"""Schedules run by real ``manage.py qcluster`` processes.

* Two clusters on PostgreSQL run the same 20 minute schedules over several slots
  (three missed ones, replayed by ``catch_up`` as both start, and a live one):
  every slot runs exactly once — counted by executions, not by results.
* A schedule every 10 s runs every 10 s, each run within its interval, although
  the scheduler looks for new or changed schedules only every 30 s: it sleeps
  until the next known schedule is due.

The task ``qhive_testkit.tasks.record`` appends one line per execution to a file.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import re

import pytest
from qhive_testkit.qcluster import wait_until
from qhive_testkit.services import require

T = "qhive_testkit.tasks"


def executions(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def schedules_on(django_project, monkeypatch):
    """``schedules_on(alias)``: Schedule rows on ``alias`` for this test and the clusters
    it starts (they inherit the environment); every schedule is deleted afterwards."""
    used = []

    def use(alias: str) -> None:
        monkeypatch.setenv("QHIVE_TEST_DATABASE", alias)
        used.append(alias)

    yield use
    from qhive_django.models import Schedule

    for alias in used:
        Schedule.objects.using(alias).all().delete()


def test_two_clusters_run_each_slot_of_20_schedules_exactly_once(
        cluster_settings, qcluster, schedules_on, tmp_path):
    from qhive_django.models import Schedule
    from qhive_django.tasks import schedule
    from qhive_store_orm.models import Task

    require("postgres")
    schedules_on("postgres")
    q = cluster_settings(database="postgres", workers=2)
    log = tmp_path / "executions.jsonl"
    now = dt.datetime.now(dt.UTC)
    first = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=2)
    last = first + dt.timedelta(minutes=3)  # the next minute boundary: a live slot
    for index in range(20):
        schedule(f"{T}.record", str(log), index, schedule_type=Schedule.MINUTES, minutes=1,
                 next_run=first, intended_date_kwarg="slot", name=f"every-minute-{index}")
    expected = {(index, (first + dt.timedelta(minutes=m)).isoformat())
                for index in range(20) for m in range(4)}

    clusters = [qcluster(q), qcluster(q)]  # same name, same queue, same schedules
    wait_until(lambda: len(executions(log)) >= len(expected),
               within=(last - now).total_seconds() + 90, what=f"{len(expected)} executions")
    assert dt.datetime.now(dt.UTC) < last + dt.timedelta(minutes=1), "before the next slot"
    for cluster in clusters:
        assert cluster.stop() == 0

    ran = collections.Counter((e["values"][0], e["named"]["slot"]) for e in executions(log))
    twice = {slot: n for slot, n in ran.items() if n != 1}
    assert not twice, f"slots that ran more than once: {twice}"
    assert set(ran) == expected, "every slot of every schedule ran"
    results = Task.objects.using("postgres").filter(cluster=q["name"])
    assert results.filter(success=True).count() == len(expected)
    created = [len(re.findall(r"created task \w+ from schedule", c.log())) for c in clusters]
    print(f"\n{len(expected)} slots ran once each; tasks created by each cluster: {created}")
    assert sum(created) == len(expected)
    for item in Schedule.objects.using("postgres").all():
        assert item.next_run == last + dt.timedelta(minutes=1) and item.repeats == -5


def test_a_schedule_every_10_seconds_runs_within_each_interval(cluster_settings, qcluster,
                                                               schedules_on, tmp_path):
    from qhive_django.models import Schedule
    from qhive_django.tasks import schedule

    schedules_on("default")
    q = cluster_settings(workers=1)  # scheduler_interval: the default 30 s
    log = tmp_path / "executions.jsonl"
    start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    schedule(f"{T}.record", str(log), schedule_type=Schedule.SECONDS, seconds=10,
             next_run=start, intended_date_kwarg="slot")
    cluster = qcluster(q)
    wait_until(lambda: len(executions(log)) >= 4, within=90, what="4 runs")
    assert cluster.stop() == 0

    runs = executions(log)
    slots = [dt.datetime.fromisoformat(e["named"]["slot"]) for e in runs]
    assert slots[:4] == [start + dt.timedelta(seconds=10 * k) for k in range(4)], "no slot missed"
    late = [e["at"] - slot.timestamp() for e, slot in zip(runs, slots, strict=True)]
    print(f"\nruns started {', '.join(f'{s:.2f}' for s in late)} s after their slot")
    assert all(0 <= seconds < 10 for seconds in late), "each run within its 10 s interval"
