"""``Schedule``, ``schedule()`` and the scheduler's passes, in this process, on the
real databases. Real ``qcluster`` processes running schedules are in
``tests/test_scheduler_cluster.py``."""

import datetime as dt
import decimal
import logging
import threading
import uuid
import zoneinfo

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.utils import timezone
from qhive_django.conf import get_config, get_pipeline
from qhive_django.tasks import result, schedule

T = "qhive_testkit.tasks"
UTC = dt.UTC
AMS = zoneinfo.ZoneInfo("Europe/Amsterdam")


@pytest.fixture(autouse=True)
def no_schedules_left(django_project):
    """The test database lives for the whole session: leave no schedule behind for
    another test's cluster to run."""

    from qhive_django.models import Schedule
    yield
    for alias in django_project.aliases:
        Schedule.objects.using(alias).all().delete()


@pytest.fixture
def on_database(database, monkeypatch):
    """Schedules (every model) on ``database`` for this test."""
    monkeypatch.setenv("QHIVE_TEST_DATABASE", database)
    return database


def minute(now=None):
    """The start of the current minute."""
    return (now or timezone.now()).replace(second=0, microsecond=0)


def run_due(now=None, cluster=None):
    from qhive_django import scheduler

    created, failed = scheduler.run_due(get_config(cluster), now)
    return created, failed


def queued(cluster=None):
    return get_pipeline(cluster).broker.queue_size()


# --------------------------------------------------------------------------- the model


def test_args_and_kwargs_round_trip_on_every_database(on_database):
    from qhive_django.models import Schedule

    when = dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    args = (1, "two", decimal.Decimal("1.50"), when, (3, 4), [5], None, b"\x00bytes")
    kwargs = {"day": dt.date(2026, 1, 31), "id": uuid.UUID(int=7), "nested": {"t": (1,)},
              "tags": {"a"}, "q_options": {"timeout": 30, "task_name": "nightly"}}
    item = schedule(f"{T}.add", *args, name="round-trip", **kwargs)
    assert item._state.db == on_database
    stored = Schedule.objects.get(name="round-trip")
    assert stored.args == args and type(stored.args[2]) is decimal.Decimal
    assert stored.kwargs == kwargs and isinstance(stored.kwargs["nested"]["t"], tuple)


def test_an_argument_that_cannot_be_stored_is_a_validation_error():
    from qhive_django.models import Schedule

    with pytest.raises(ValidationError, match="cannot serialize a value of type 'object'"):
        schedule("math.floor", object())
    assert not Schedule.objects.exists()


def test_schedule_defaults_are_django_q2s():
    from qhive_django.models import Schedule

    before = timezone.now()
    item = schedule("math.copysign", 2, -2, hook="hooks.print_result")
    item.refresh_from_db()
    assert (item.func, item.args, item.kwargs, item.hook) == \
        ("math.copysign", (2, -2), {}, "hooks.print_result")
    assert (item.schedule_type, item.repeats, item.name, item.cluster) == \
        (Schedule.ONCE, -1, None, None)
    assert before <= item.next_run <= timezone.now()
    assert str(item) == "math.copysign" and item.success() is None and item.last_run() is None


def test_a_module_level_function_is_stored_as_its_dotted_path():
    from qhive_testkit.tasks import add

    assert schedule(add, 1, 2).func == f"{T}.add"
    with pytest.raises(TypeError, match="dotted path or a module-level function"):
        schedule(lambda: None)


def test_a_second_schedule_with_the_same_name_is_refused():
    from qhive_django.models import Schedule

    schedule("math.floor", 1.5, name="nightly")
    with pytest.raises(IntegrityError, match="A schedule with the same name already exists"):
        schedule("math.ceil", 1.5, name="nightly")
    assert Schedule.objects.filter(name="nightly").count() == 1
    schedule("math.floor", 1.5)  # several without a name are fine
    schedule("math.floor", 2.5)


@pytest.mark.parametrize(("options", "field", "message"), [
    ({"schedule_type": "C", "cron": "61 * * * *"}, "cron", "not a cron expression"),
    ({"schedule_type": "C"}, "cron", "needs a cron expression"),
    ({"schedule_type": "S"}, "seconds", "needs a number of seconds"),
    ({"schedule_type": "X"}, "schedule_type", "not a valid choice"),
    ({"intended_date_kwarg": "class"}, "intended_date_kwarg", "not a keyword argument name"),
    ({"q_options": {"timout": 3}}, "kwargs", "did you mean 'timeout'"),
    ({"hook": "not a path"}, "hook", "not a dotted path"),
], ids=["bad-cron", "no-cron", "no-seconds", "bad-type", "keyword", "q_options", "hook"])
def test_bad_schedules_are_refused_naming_the_field(options, field, message):
    from qhive_django.models import Schedule

    with pytest.raises(ValidationError) as info:
        schedule("math.floor", 1, **options)
    assert message in " ".join(info.value.message_dict[field])
    assert not Schedule.objects.exists()


def test_django_q2_notation_is_read_too():
    from qhive_django.models import Schedule

    item = Schedule(func="math.hypot", args="3, 4", kwargs="x=1, y='two'")
    item.full_clean()
    assert (item.args, item.kwargs) == ((3, 4), {"x": 1, "y": "two"})
    item = Schedule(func="math.hypot", args="[3, 4]", kwargs='{"x": [1]}')
    item.full_clean()
    assert (item.args, item.kwargs) == ((3, 4), {"x": [1]})
    # the seeds' example, without validation
    created = Schedule.objects.create(func="math.copysign", hook="hooks.print_result",
                                      args="2,-2", schedule_type=Schedule.DAILY)
    assert Schedule.objects.get(pk=created.pk).args == (2, -2)


def test_a_new_cron_schedule_starts_at_its_first_time_from_next_run():
    later = dt.datetime(2030, 1, 1, 12, tzinfo=UTC)
    item = schedule("math.floor", 1, schedule_type="C", cron="0 9 * * *", next_run=later)
    assert item.next_run == dt.datetime(2030, 1, 2, 9, tzinfo=UTC), "Django Q2 ignores next_run"
    on_time = dt.datetime(2030, 1, 1, 9, tzinfo=UTC)
    item = schedule("math.floor", 1, schedule_type="C", cron="0 9 * * *", next_run=on_time)
    assert item.next_run == on_time
    item = schedule("math.floor", 1, schedule_type="C", cron="*/5 * * * *")
    assert timezone.now() <= item.next_run <= timezone.now() + dt.timedelta(minutes=5)


def test_next_run_follows_the_configured_time_zone(q_cluster):
    q_cluster(time_zone="Europe/Amsterdam")
    item = schedule("math.floor", 1, schedule_type="D",
                    next_run=dt.datetime(2026, 3, 28, 1, tzinfo=AMS))
    following = item.calculate_next_run()
    assert following.astimezone(AMS).hour == 1 and following.astimezone(AMS).day == 29
    assert item.calculate_next_run(following).astimezone(AMS).hour == 1
    assert item.calculate_next_run(following) - following == dt.timedelta(hours=23)


def test_naive_datetimes_without_use_tz_are_wall_clock_times_of_time_zone(q_cluster):
    from django.test import override_settings

    q_cluster()
    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Amsterdam"):
        item = schedule(f"{T}.add", 1, 1, schedule_type="D",
                        next_run=dt.datetime(2026, 3, 28, 1, 0))
        item.refresh_from_db()
        assert item.next_run == dt.datetime(2026, 3, 28, 1, 0)
        assert item.calculate_next_run() == dt.datetime(2026, 3, 29, 1, 0)
        assert item.calculate_next_run(dt.datetime(2026, 3, 29, 1, 0)) == \
            dt.datetime(2026, 3, 30, 1, 0)
        assert run_due(dt.datetime(2026, 3, 29, 12, 0)) == (2, set())
        item.refresh_from_db()
        assert item.next_run == dt.datetime(2026, 3, 30, 1, 0)


def test_the_calendar_counts_from_next_run_as_last_set_by_hand():
    from qhive_django.models import Schedule

    jan31 = dt.datetime(2027, 1, 31, 8, tzinfo=UTC)
    item = schedule("math.floor", 1, schedule_type="M", next_run=jan31)
    assert item.anchor == jan31
    # The scheduler moves next_run (an UPDATE): the 31st is remembered.
    Schedule.objects.filter(pk=item.pk).update(next_run=item.calculate_next_run())
    item.refresh_from_db()
    assert item.next_run.day == 28 and item.calculate_next_run().day == 31
    item.func = "math.ceil"  # an edit of something else keeps the calendar
    item.save()
    assert item.anchor == jan31
    item.next_run = dt.datetime(2027, 6, 15, 8, tzinfo=UTC)  # a new next_run by hand restarts it
    item.save()
    assert item.anchor == item.next_run and item.calculate_next_run().day == 15


# --------------------------------------------------------------------------- the scheduler


def test_catch_up_runs_every_missed_slot_with_its_intended_date(q_cluster):
    q_cluster()
    now = minute()
    item = schedule(f"{T}.echo", "x", schedule_type="I", minutes=1, name="missed",
                    next_run=now - dt.timedelta(minutes=5), intended_date_kwarg="slot")
    assert run_due(now + dt.timedelta(seconds=1)) == (6, set())
    item.refresh_from_db()
    assert item.next_run == now + dt.timedelta(minutes=1) and item.repeats == -7
    assert len(get_pipeline().drain()) == 6
    results = get_pipeline().result_store.get_group("missed")
    assert sorted(r.result[1]["slot"] for r in results) == \
        [(now - dt.timedelta(minutes=m)).isoformat() for m in range(5, -1, -1)]
    assert {r.result[0][0] for r in results} == {"x"}


def test_without_catch_up_it_runs_once_and_moves_to_the_next_future_slot(q_cluster):
    q_cluster(catch_up=False)
    now = minute()
    item = schedule(f"{T}.add", "", "", schedule_type="I", minutes=1, name="late",
                    next_run=now - dt.timedelta(minutes=5, seconds=30))
    assert run_due(now + dt.timedelta(seconds=10)) == (1, set())
    item.refresh_from_db()
    assert item.next_run == now + dt.timedelta(minutes=1, seconds=-30), "on the calendar"
    assert item.next_run > now + dt.timedelta(seconds=10) and item.repeats == -2
    assert run_due(now + dt.timedelta(seconds=10)) == (0, set()), "nothing due any more"


def test_repeats_count_down_and_stop_at_zero(q_cluster):
    q_cluster()
    now = minute()
    limited = schedule(f"{T}.add", 1, 1, schedule_type="I", repeats=2,
                       next_run=now - dt.timedelta(minutes=4))
    forever = schedule(f"{T}.add", 2, 2, schedule_type="I", repeats=-1,
                       next_run=now - dt.timedelta(minutes=2))
    paused = schedule(f"{T}.add", 3, 3, schedule_type="I", repeats=0,
                      next_run=now - dt.timedelta(minutes=2))
    assert run_due(now) == (5, set())  # 2 of limited, 3 of forever, none of paused
    for item in (limited, forever, paused):
        item.refresh_from_db()
    assert (limited.repeats, forever.repeats, paused.repeats) == (0, -4, 0)
    assert paused.task is None and paused.next_run == now - dt.timedelta(minutes=2)
    assert run_due(now + dt.timedelta(hours=1)) == (60, set()), "only forever runs on"


def test_once_deletes_itself_with_negative_repeats_and_keeps_itself_with_positive(q_cluster):
    from qhive_django.models import Schedule

    q_cluster()
    past = timezone.now() - dt.timedelta(seconds=1)
    gone = schedule(f"{T}.add", 1, 1, next_run=past)
    kept = schedule(f"{T}.add", 2, 2, next_run=past, repeats=1)
    future = schedule(f"{T}.add", 3, 3, next_run=timezone.now() + dt.timedelta(hours=1))
    assert run_due() == (2, set())
    assert not Schedule.objects.filter(pk=gone.pk).exists()
    kept.refresh_from_db()
    assert kept.repeats == 0 and kept.task and kept.next_run == past
    assert Schedule.objects.get(pk=future.pk).task is None
    get_pipeline().drain()
    assert result(kept.task) == 4


def test_the_task_gets_the_schedules_name_hook_and_q_options(q_cluster):
    q_cluster()
    item = schedule(f"{T}.add", 20, 22, name="answer", hook="qhive_testkit.tasks.echo",
                    q_options={"timeout": 30, "task_name": "the-answer"},
                    next_run=timezone.now() - dt.timedelta(seconds=1), repeats=1)
    run_due()
    item.refresh_from_db()
    message = get_pipeline().broker.dequeue(count=1)[0]
    task = get_pipeline().codec.decode(message.payload)
    assert task["id"] == item.task
    assert (task["group"], task["hook"], task["timeout"], task["name"]) == \
        ("answer", "qhive_testkit.tasks.echo", 30, "the-answer")
    assert (task["args"], task["kwargs"]) == ((20, 22), {})
    get_pipeline().broker.release(message.ack_id)
    get_pipeline().drain()
    assert result("the-answer") == 42 and item.success() is True


def test_a_bad_schedule_fails_alone_and_waits_for_the_next_look(q_cluster, caplog):
    from qhive_django import scheduler
    from qhive_django.models import Schedule

    q_cluster()
    past = timezone.now() - dt.timedelta(seconds=1)
    good = [schedule(f"{T}.add", i, i, next_run=past, repeats=1) for i in range(2)]
    bad = schedule(f"{T}.add", 5, 5, next_run=past, repeats=1)
    # written behind validation's back, e.g. by an old migration or raw SQL
    Schedule.objects.filter(pk=bad.pk).update(kwargs={"q_options": {"timeout": -1}})
    caplog.set_level(logging.ERROR, logger="qhive.scheduler")
    created, failed = run_due()
    assert (created, failed) == (2, {bad.pk})
    assert f"schedule {bad.pk} could not run: ValueError: async_task(timeout=...)" in caplog.text
    bad.refresh_from_db()
    assert (bad.repeats, bad.task, bad.next_run) == (1, None, past), "left as it was"
    assert all(Schedule.objects.get(pk=g.pk).repeats == 0 for g in good)
    assert queued() == 2

    caplog.clear()
    thread = scheduler.Scheduler(get_config())
    thread.run_once()
    assert caplog.text.count("could not run") == 1
    thread.run_once()  # within scheduler_interval: not tried again
    assert caplog.text.count("could not run") == 1


def test_each_cluster_runs_its_own_schedules(q_cluster):
    from qhive_django.models import Schedule

    q = q_cluster(ALT_CLUSTERS={"long": {}})
    past = timezone.now() - dt.timedelta(seconds=1)
    root = schedule(f"{T}.add", 1, 1, next_run=past, repeats=1)
    named_root = schedule(f"{T}.add", 1, 2, next_run=past, repeats=1, cluster=q["name"])
    long = schedule(f"{T}.add", 2, 2, next_run=past, repeats=1, cluster="long")
    routed = schedule(f"{T}.add", 3, 3, next_run=past, repeats=1, q_options={"cluster": "long"})
    assert run_due() == (3, set())
    assert Schedule.objects.get(pk=long.pk).repeats == 1, "not the root's"
    assert (queued(), queued("long")) == (2, 1), "q_options cluster routes the task"
    assert run_due(cluster="long") == (1, set())
    assert queued("long") == 2
    for item in (root, named_root, long, routed):
        assert Schedule.objects.get(pk=item.pk).repeats == 0


def test_scheduler_false_turns_it_off(q_cluster):
    import types

    from qhive_django import scheduler

    for on in (False, True):
        q_cluster(scheduler=on)
        cluster = types.SimpleNamespace(config=get_config(), watch=lambda thread, name: None)
        scheduler.start_for(cluster)
        thread = scheduler._running.get(id(cluster))
        assert (thread is not None) is on
        scheduler.stop_for(cluster)
        assert thread is None or not thread.is_alive()


def test_the_scheduler_sleeps_until_the_next_schedule_is_due(q_cluster):
    from qhive_django import scheduler

    q_cluster(scheduler_interval=30)
    thread = scheduler.Scheduler(get_config())
    assert thread.run_once() == 30, "nothing scheduled: the interval"
    schedule(f"{T}.add", 1, 1, schedule_type="S", seconds=10,
             next_run=timezone.now() + dt.timedelta(seconds=20))
    assert 5 < thread.run_once() <= 20, "until the schedule is due (a loaded machine: slack)"
    schedule(f"{T}.add", 1, 1, next_run=timezone.now() - dt.timedelta(seconds=5))
    assert thread.run_once() <= 20 and queued() == 1


@pytest.mark.parametrize("clusters", [2, 4])
def test_each_slot_is_claimed_once_by_concurrent_schedulers(q_cluster, on_database, clusters):
    """``clusters`` schedulers run the same 20 due schedules (3 missed slots each) at
    the same moment, each on its own database connection; with the ORM broker on the
    same database. Every slot is enqueued exactly once."""

    from qhive_django import scheduler
    q_cluster(memory=False, orm=on_database, result_store_options={"database": on_database})
    now = minute()
    items = [schedule(f"{T}.add", i, 0, schedule_type="I", minutes=1,
                      next_run=now - dt.timedelta(minutes=2)) for i in range(20)]
    config = get_config()
    start = threading.Barrier(clusters)
    counts, errors = [], []

    def cluster():
        from django.db import connections

        try:
            start.wait()
            created, failed = scheduler.run_due(config, now)
            counts.append(created)
            errors.extend(failed)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=cluster) for _ in range(clusters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert errors == [] and sum(counts) == 60, counts
        assert queued() == 60
        slots = {}
        while messages := get_pipeline().broker.dequeue(count=100):
            for message in messages:
                task = get_pipeline().codec.decode(message.payload)
                slots[task["id"]] = task["args"]
                get_pipeline().broker.acknowledge(message.ack_id)
        assert len(slots) == 60
        for item in items:
            item.refresh_from_db()
            assert (item.next_run, item.repeats) == (now + dt.timedelta(minutes=1), -4)
    finally:
        get_pipeline().broker.purge_queue()


def test_migrations_match_the_models(django_project):
    from django.core.management import call_command

    call_command("makemigrations", "qhive_django", check=True, dry_run=True, verbosity=0)
