"""The ``Task`` model and its proxies keep Django Q2's names and semantics (on the
routed database, SQLite here), with name lookups that never raise."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.core import serializers
from django.core.management import call_command
from qhive.contracts import TaskResult
from qhive_store_orm.store import OrmResultStore
from qhive_testkit.result_store import Results


@pytest.fixture
def models(django_project):
    from qhive_store_orm import models

    return models


@pytest.fixture
def results(models):
    made = Results()
    yield made
    models.Task.objects.filter(id__in=made.ids).delete()
    models.Task.objects.filter(group__in=made.groups).delete()


@pytest.fixture
def store(models):
    """Keyed and salted like the models' own codec: Django's settings."""
    return OrmResultStore()


@pytest.fixture
def group(store, results):
    """A group of two successes and a failure (the newest), saved in that order."""
    name = results.group()
    store.save_many([
        results.make(group=name, result=1),
        results.make(group=name, result=2),
        results.make(group=name, success=False, result="boom"),
    ])
    return name


# --------------------------------------------------------------------------- fields


def test_values_read_back_as_python_values(models, store, results):
    result = results.make(result={"a": [1, 2]}, args=(1, "x"), kwargs={"k": None})
    store.save(result)
    task = models.Task.objects.get(id=result.id)
    assert (task.result, task.args, task.kwargs) == ({"a": [1, 2]}, (1, "x"), {"k": None})
    assert task.to_result() == result


def test_a_task_saved_through_the_orm_is_read_by_the_store(models, store, results):
    result = results.make(result=[b"raw bytes", 3.5])
    models.Task.from_result(result).save()
    assert store.get(result.id) == result
    assert models.Task.objects.filter(id=result.id).values_list("result", flat=True)[0] == [
        b"raw bytes", 3.5]


def test_none_is_stored_as_null(models, store, results):
    result = results.make(result=None)
    store.save(result)
    assert models.Task.objects.filter(id=result.id, result__isnull=True).exists()
    assert models.Task.get_result(result.id) is None


def test_dumpdata_and_loaddata_keep_the_signed_values(models, store, results):
    result = results.make(result={"kept": True}, args=(1,))
    store.save(result)
    data = serializers.serialize("json", models.Task.objects.filter(id=result.id))
    models.Task.objects.filter(id=result.id).delete()
    for obj in serializers.deserialize("json", data):
        obj.save()
    got = store.get(result.id)  # (Django's JSON keeps milliseconds of the datetimes)
    assert (got.result, got.args, got.kwargs) == ({"kept": True}, (1,), {})


def test_migrations_match_the_models(django_project):
    call_command("makemigrations", "qhive_store_orm", check=True, dry_run=True, verbosity=0)


# --------------------------------------------------------------------------- lookups


def test_get_result_and_get_task_by_id_and_name(models, store, results):
    result = results.make(result="by id")
    store.save(result)
    assert models.Task.get_result(result.id) == "by id"
    assert models.Task.get_result(uuid.UUID(result.id)) == "by id", "a UUID works too"
    assert models.Task.get_result(result.name) == "by id"
    assert models.Task.get_task(result.id).id == result.id
    assert models.Task.get_task(result.name).id == result.id
    assert models.Task.get_result(uuid.uuid4().hex) is None
    assert models.Task.get_task("no-such-name") is None


def test_duplicate_names_give_the_newest_without_raising(models, store, results):
    older = results.make(result="older")
    newer = results.make(name=older.name, result="newer")
    store.save_many([newer, older])
    assert models.Task.get_result(older.name) == "newer"
    assert models.Task.get_task(older.name).id == newer.id


def test_a_32_character_name_that_is_no_id_is_looked_up_by_name(models, store, results):
    result = results.make(name="x" * 32, result="named")
    store.save(result)
    assert models.Task.get_result("x" * 32) == "named"


# --------------------------------------------------------------------------- groups


def test_get_result_group(models, group):
    assert list(models.Task.get_result_group(group)) == [2, 1], "successes, newest first"
    assert list(models.Task.get_result_group(group, failures=True)) == ["boom", 2, 1]
    assert list(models.Task.get_result_group("no-such-group")) == []


def test_get_group_count(models, group):
    assert models.Task.get_group_count(group) == 3, "every task of the group"
    assert models.Task.get_group_count(group, failures=True) == 1


def test_get_task_group(models, group):
    assert [t.result for t in models.Task.get_task_group(group)] == ["boom", 2, 1]
    assert [t.result for t in models.Task.get_task_group(group, failures=False)] == [2, 1]


def test_delete_group_clears_the_label(models, group):
    assert models.Task.delete_group(group) == 3
    assert models.Task.get_group_count(group) == 0


def test_delete_group_with_objects_deletes_the_tasks(models, group):
    deleted, per_model = models.Task.delete_group(group, objects=True)
    assert deleted == 3 and per_model == {"qhive_store_orm.Task": 3}


def test_instance_group_methods(models, group, store, results):
    task = models.Task.get_task_group(group).first()
    assert list(task.group_result()) == [2, 1]
    assert list(task.group_result(failures=True)) == ["boom", 2, 1]
    assert (task.group_count(), task.group_count(failures=True)) == (3, 1)
    alone = results.make()
    store.save(alone)
    lonely = models.Task.objects.get(id=alone.id)
    assert lonely.group_result() is None and lonely.group_count() is None
    assert lonely.group_delete() is None
    assert task.group_delete(tasks=True)[0] == 3


# --------------------------------------------------------------------------- the rest


def test_time_taken_and_str(models):
    started = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    task = models.Task(id=uuid.uuid4().hex, name="amber-fox", started=started,
                       stopped=started + dt.timedelta(seconds=2.5))
    assert task.time_taken() == 2.5
    assert str(task) == "amber-fox"
    task.name = ""
    assert str(task) == task.id


def test_success_and_failure_proxies(models, group):
    assert [t.result for t in models.Success.objects.filter(group=group)] == [2, 1]
    assert [t.result for t in models.Failure.objects.filter(group=group)] == ["boom"]
    assert models.Success._meta.verbose_name == "Successful task"
    assert models.Success._meta.verbose_name_plural == "Successful tasks"
    assert models.Failure._meta.verbose_name == "Failed task"
    assert models.Failure._meta.verbose_name_plural == "Failed tasks"
    assert models.Task._meta.db_table == "qhive_task"
    assert models.Task._meta.ordering == ["-stopped"]


def test_from_result_and_to_result(models):
    now = dt.datetime.now(dt.UTC)
    result = TaskResult(id=uuid.uuid4().hex, name="n", func="f", started=now, stopped=now,
                        success=True, result=(1,), args=(2,), kwargs={"x": 3}, group="g")
    task = models.Task.from_result(result)
    assert task._state.adding and task.result == (1,)
    assert task.to_result() == result


def test_system_checks_pass(django_project):
    call_command("check", "qhive_store_orm", fail_level="WARNING", verbosity=0)


def test_without_time_zone_support(models, store, results):
    from django.test import override_settings

    result = results.make(result="naive")
    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Paris"):
        store.save(result)
        assert store.get(result.id) == result, "datetimes come back aware and equal"
        stored = models.Task.objects.get(id=result.id)
        assert stored.stopped.tzinfo is None, "Django's own convention without USE_TZ"


def test_next_attempt_without_time_zone_support(models, store, results):
    from django.test import override_settings

    due = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    result = results.make(success=False, next_attempt=due)
    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Paris"):
        store.save(result)
        assert store.get(result.id).next_attempt == due
        assert models.Task.objects.get(id=result.id).to_result() == result
        retry = results.again(result, success=False)
        store.save(retry)
        assert store.get(result.id).next_attempt is None


def test_next_attempt_converts_from_and_to_a_task_result(models, results):
    due = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    result = results.make(success=False, next_attempt=due)
    task = models.Task.from_result(result)
    assert task.next_attempt == due and task.to_result() == result
    task.save()
    assert models.Failure.objects.get(id=result.id).to_result() == result
    assert not models.Success.objects.filter(id=result.id).exists()
