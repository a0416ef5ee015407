"""The task API on the default backends — the ORM broker and result store — on every database."""

import importlib.util

import pytest
from qhive_django.conf import get_pipeline
from qhive_django.tasks import async_task, fetch, queue_size, result

T = "qhive_testkit.tasks"

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(app) for app in ("qhive_broker_orm", "qhive_store_orm")),
    reason="the ORM broker (qhive_broker_orm) or result store (qhive_store_orm) is not installed",
)

hooked = []


def record_hook(task):
    hooked.append(task)


@pytest.fixture
def orm_cluster(q_cluster, database):
    """Q_CLUSTER on the ORM broker and store, both on ``database``."""
    # The broker is selected by Django Q's 'orm' key (a database alias).
    q_cluster(memory=False, orm=database, result_store_options={"database": database})
    yield database
    get_pipeline().broker.purge_queue()


def test_the_default_backends_are_the_orm_ones(q_cluster):
    from django.core.checks import run_checks

    q_cluster(memory=False)
    pipeline = get_pipeline()
    assert (pipeline.config.broker, pipeline.config.result_store) == ("orm", "orm")
    assert run_checks(tags=["qhive"]) == []
    task_id = async_task(f"{T}.add", 1, 1)
    pipeline.drain()
    assert result(task_id) == 2


def test_enqueue_run_and_fetch_on_each_database(orm_cluster):
    from qhive_django.models import Task

    hooked.clear()
    task_id = async_task(f"{T}.add", 40, 2, task_name="answer", hook=record_hook)
    none_id = async_task(f"{T}.nothing")
    failed_id = async_task(f"{T}.boom", "on purpose")
    assert queue_size() == 3
    get_pipeline().drain()
    assert queue_size() == 0

    found = fetch(task_id)
    assert isinstance(found, Task) and found._state.db == orm_cluster
    assert (found.result, found.name, found.success) == (42, "answer", True)
    assert result("answer") == 42
    assert fetch(none_id, wait=-1).success and result(none_id) is None
    assert "ValueError: on purpose" in result(failed_id)
    [task] = hooked  # the hook gets the saved row
    assert isinstance(task, Task) and task.pk == task_id and task.result == 42


def test_sync_mode_on_each_database(orm_cluster):
    from qhive_django.models import Failure, Success

    task_id = async_task(f"{T}.add", 1, 2, sync=True)
    assert result(task_id) == 3 and queue_size() == 0
    with pytest.raises(ValueError):
        async_task(f"{T}.boom", sync=True, task_name="sync-failure")
    assert Success.objects.using(orm_cluster).filter(pk=task_id).exists()
    assert Failure.objects.using(orm_cluster).filter(name="sync-failure").exists()


def test_models_are_reexported():
    from qhive_broker_orm.models import QueuedTask
    from qhive_django import models
    from qhive_store_orm.models import Failure, Success, Task

    assert (models.Task, models.Success, models.Failure, models.QueuedTask) == (
        Task, Success, Failure, QueuedTask)
