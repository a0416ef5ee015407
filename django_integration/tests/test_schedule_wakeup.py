"""Writing schedules wakes sleeping schedulers: every write through ``Schedule`` marks
the change once it commits, and a scheduler's :class:`ScheduleChanges` ends its sleep
on it, on every database. A real cluster: ``tests/test_scheduler_wakeup.py``."""

import datetime as dt
import threading
import time

import pytest
from django.db import connections, transaction
from django.utils import timezone
from qhive_django.conf import get_config
from qhive_django.tasks import schedule
from qhive_testkit.services import require

T = "qhive_testkit.tasks"


@pytest.fixture
def on_database(database, monkeypatch):
    """Schedules (every model) on ``database`` for this test; none left afterwards."""
    from qhive_django.models import Schedule

    monkeypatch.setenv("QHIVE_TEST_DATABASE", database)
    yield database
    Schedule.objects.using(database).all().delete()


def revision(alias):
    from qhive_django.models import ScheduleRevision

    return ScheduleRevision.objects.using(alias).filter(pk=1).values_list("revision",
                                                                          flat=True).first()


def test_every_write_marks_a_change_and_a_claim_does_not(on_database, q_cluster):
    from qhive_django import scheduler
    from qhive_django.models import Schedule

    q_cluster()
    seen = [revision(on_database)]

    def changed():
        seen.append(revision(on_database))
        return seen[-1] != seen[-2]

    item = schedule(f"{T}.add", 1, 1, next_run=timezone.now() - dt.timedelta(seconds=1))
    assert changed(), "create"
    item.hook = "math.floor"
    item.save()
    assert changed(), "save"
    Schedule.objects.filter(pk=item.pk).update(hook=None)
    assert changed(), "QuerySet.update"
    Schedule.objects.filter(pk=-1).update(hook=None)
    assert not changed(), "an update of no row"
    future = timezone.now() + dt.timedelta(hours=1)
    Schedule.objects.bulk_create([Schedule(func="math.floor", args=(1.5,), next_run=future),
                                  Schedule(func="math.ceil", args=(1.5,), next_run=future)])
    assert changed(), "bulk_create"
    assert scheduler.run_due(get_config()) == (1, set())
    assert not Schedule.objects.filter(pk=item.pk).exists(), "ONCE: deleted by its claim"
    assert not changed(), "the scheduler's claim is no news"
    Schedule.objects.filter(func="math.floor").delete()
    assert changed(), "QuerySet.delete"
    Schedule.objects.get(func="math.ceil").delete()
    assert changed(), "delete"

    with transaction.atomic(using=on_database):
        schedule(f"{T}.add", 2, 2)
        assert not changed(), "not before the commit"
    assert changed(), "at the commit"


@pytest.mark.parametrize("write", ["save", "delete"])
def test_a_sleeping_scheduler_wakes_when_schedules_change(on_database, write):
    from qhive_django.models import Schedule
    from qhive_django.scheduler import ScheduleChanges

    item = schedule(f"{T}.add", 1, 1, next_run=timezone.now() + dt.timedelta(hours=1))
    changes = ScheduleChanges(on_database)
    assert changes.listens is (connections[on_database].vendor == "postgresql")

    def later():
        try:
            time.sleep(0.5)
            if write == "save":
                item.next_run = timezone.now()
                item.save()
            else:
                Schedule.objects.filter(pk=item.pk).delete()
        finally:
            connections.close_all()  # this thread's

    changes.arm()
    thread = threading.Thread(target=later)
    start = time.monotonic()
    thread.start()
    try:
        changes.wait(30, threading.Event())
        slept = time.monotonic() - start
    finally:
        thread.join()
        changes.close()
    assert slept < 10, f"woke after {slept:.1f} s, not at the end of the 30 s"


def test_stopping_ends_the_sleep(on_database):
    from qhive_django.scheduler import ScheduleChanges

    changes = ScheduleChanges(on_database)
    stopping = threading.Event()
    changes.arm()
    threading.Timer(0.2, stopping.set).start()
    start = time.monotonic()
    try:
        changes.wait(30, stopping)
    finally:
        changes.close()
    assert time.monotonic() - start < 10


def test_on_postgresql_the_notify_alone_wakes_it(django_project):
    from qhive_django.models import SCHEDULES_CHANNEL
    from qhive_django.scheduler import ScheduleChanges

    require("postgres")
    database = "postgres"
    changes = ScheduleChanges(database)
    changes.arm()  # listens from here on

    def notify():
        try:
            time.sleep(0.5)
            with connections[database].cursor() as cursor:  # no revision change
                cursor.execute("SELECT pg_notify(%s, '')", [SCHEDULES_CHANNEL])
        finally:
            connections.close_all()

    thread = threading.Thread(target=notify)
    start = time.monotonic()
    thread.start()
    try:
        changes.wait(30, threading.Event())
        slept = time.monotonic() - start
    finally:
        thread.join()
        changes.close()
    assert slept < 10, f"woke after {slept:.1f} s, not at the end of the 30 s"
