"""A running ``manage.py qcluster`` sees a schedule the moment it is saved, not at its
scheduler's next ``scheduler_interval`` look: ``NOTIFY`` on PostgreSQL, the schedules'
revision read every second elsewhere."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from qhive_testkit.qcluster import wait_until

T = "qhive_testkit.tasks"


@pytest.fixture
def schedules_on(database, monkeypatch):
    """Schedule rows on ``database`` for this test and its cluster (the test project's
    router reads the environment); deleted afterwards."""
    from qhive_django.models import Schedule

    monkeypatch.setenv("QHIVE_TEST_DATABASE", database)
    yield database
    Schedule.objects.using(database).all().delete()


def test_a_schedule_saved_while_the_cluster_sleeps_runs_on_time(cluster_settings, qcluster,
                                                                schedules_on, tmp_path):
    from qhive_django.models import Schedule
    from qhive_django.tasks import schedule

    log = tmp_path / "executions.jsonl"
    later = schedule(f"{T}.record", str(log), "edited", intended_date_kwarg="slot",
                     next_run=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    q = cluster_settings(database=schedules_on, workers=1, scheduler_interval=30)
    cluster = qcluster(q)
    cluster.wait_for_log("scheduler running")
    time.sleep(2)  # its first look is over: it sleeps until `later` or 30 s, whichever first

    slot = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    schedule(f"{T}.record", str(log), "new", intended_date_kwarg="slot", next_run=slot)
    later.next_run = slot
    later.save()
    assert Schedule.objects.using(schedules_on).count() == 2

    def runs():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    wait_until(lambda: len(runs()) >= 2, within=60, what="both schedules to run")
    assert cluster.stop() == 0
    late = {run["values"][0]: run["at"] - dt.datetime.fromisoformat(run["named"]["slot"])
            .timestamp() for run in runs()}
    print(f"\nruns started {late} s after their slot (scheduler_interval 30 s)")
    assert set(late) == {"new", "edited"}
    # a generous bound, far below the 30 s the scheduler would otherwise sleep
    assert all(0 <= seconds < 10 for seconds in late.values()), late
