"""The task API of Django Q2 §1 against a real ``manage.py qcluster``: results, groups,
``async_iter`` / ``Iter``, ``async_chain`` / ``Chain``, ``AsyncTask`` and cached
operations — once with the ORM result store, once with every result in the cache
(``Q_CLUSTER["cached"] = True``, Django's Redis cache shared by the test process
and the cluster).

One cluster per store serves the whole module; each test uses its own groups.
The cluster acknowledges a failure at once (``max_attempts=1``), so chains go on
after a failing link; ``save_limit`` is 5 per group, less than the parts of the
iter below.
"""

from __future__ import annotations

import json
import signal
import uuid

import pytest
from qhive_testkit.qcluster import QCluster, wait_until
from qhive_testkit.services import delete_redis_keys, redis_url, require

T = "qhive_testkit.tasks"
WAIT = 60_000  # ms: generous, the suite runs on a loaded two-core machine


@pytest.fixture(scope="module", params=["orm", "cache"])
def store(request, django_project, tmp_path_factory):
    """Which results store the module's cluster uses; the cluster runs meanwhile."""
    from django.test import override_settings
    from qhive_django.conf import get_pipeline

    q = {"name": f"api{uuid.uuid4().hex[:10]}", "workers": 2, "guard_cycle": 0.2,
         "poll": 0.05, "max_attempts": 1, "save_limit": 5, "save_limit_per": "group"}
    env, caches = {}, None
    if request.param == "cache":
        require("redis")
        caches = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                              "LOCATION": redis_url(),
                              "KEY_PREFIX": q["name"]}}
        q["cached"] = True
        env["QHIVE_TEST_CACHES"] = json.dumps(caches)
    override = override_settings(Q_CLUSTER=q, **({"CACHES": caches} if caches else {}))
    override.enable()
    log = tmp_path_factory.mktemp("api") / "qcluster.log"
    cluster = QCluster(django_project, q, log, env=env)
    try:
        cluster.wait_for_log("running (pid")
        yield request.param
        assert cluster.stop() == 0, cluster.log()
    finally:
        if cluster.process.poll() is None:
            cluster.stop(signal.SIGKILL)
        get_pipeline().broker.purge_queue()
        override.disable()
        if caches:  # the cached results, under the cluster's key prefix
            delete_redis_keys(f"{q['name']}:*")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- results


def test_result_and_fetch_by_id_and_name(store):
    from qhive_django.tasks import async_task, fetch, result

    task_id = async_task(f"{T}.add", 40, 2, task_name=unique("answer"))
    assert result(task_id, wait=WAIT) == 42
    task = fetch(task_id)
    assert (task.id, task.func, task.args, task.success) == (task_id, f"{T}.add", (40, 2), True)
    assert result(task.name) == 42 and fetch(task.name).id == task_id
    assert task.time_taken() >= 0
    assert result(uuid.uuid4().hex) is None


# --------------------------------------------------------------------------- groups


def test_groups(store):
    from qhive_django.tasks import (
        async_task,
        count_group,
        delete_group,
        fetch,
        fetch_group,
        result_group,
    )

    group = unique("g")
    ids = [async_task(f"{T}.add", i, 10, group=group) for i in range(3)]
    failed = async_task(f"{T}.boom", "bad", group=group)
    assert sorted(result_group(group, count=4, wait=WAIT)) == [10, 11, 12]
    assert len(result_group(group, failures=True)) == 4
    assert (count_group(group), count_group(group, failures=True)) == (4, 1)
    assert sorted(t.id for t in fetch_group(group)) == sorted([*ids, failed])
    assert sorted(t.id for t in fetch_group(group, failures=False)) == sorted(ids)
    if store == "orm":
        assert delete_group(group) == 4, "the ORM store clears the group label"
        assert count_group(group) == 0 and fetch(ids[0]).group is None
    else:
        assert delete_group(group) == 4, "the cache store deletes the group's results"
        # Django Q2: a group the cache does not know counts None
        assert count_group(group) is None and fetch(ids[0]) is None


def test_async_task_object_and_its_group(store):
    from qhive_django.tasks import AsyncTask

    group = unique("a")
    task = AsyncTask(f"{T}.add", 2, 3, group=group)
    assert task.result() is None and task.result_group() is None
    task.run()
    assert task.result(wait=WAIT) == 5
    assert task.fetch().group == group
    assert task.result_group(count=1, wait=WAIT) == [5]
    assert [t.id for t in task.fetch_group()] == [task.id]
    assert task.cached is (store == "cache")


# --------------------------------------------------------------------------- iter


def test_async_iter_collates_every_part_in_order(store):
    from qhive_django.tasks import async_iter, count_group, fetch, result

    group = async_iter(f"{T}.add", [(i, 1000) for i in range(20)])  # 20 > save_limit 5
    assert result(group, wait=WAIT) == [i + 1000 for i in range(20)]
    collated = fetch(group)
    assert collated.success and collated.args == tuple((i, 1000) for i in range(20))
    # the collated result is saved first, then the parts are deleted
    wait_until(lambda: not count_group(group), within=60, what="the parts to be deleted")


def test_iter_object(store):
    from qhive_django.tasks import Iter

    it = Iter(f"{T}.add")
    it.append(1, 2)
    it.append(3, 4)
    assert it.length() == 2 and it.result() is None
    it.run()
    assert it.result(wait=WAIT) == [3, 7]
    assert it.fetch().result == [3, 7]


# --------------------------------------------------------------------------- chains


def test_async_chain_with_an_unsaved_and_a_failing_link(store):
    from qhive_django.tasks import async_chain, count_group, fetch_group, result_group

    group = async_chain([(f"{T}.add", (1, 1), {"save": False}), (f"{T}.boom", ("link",)),
                         (f"{T}.add", (2, 2))])
    # save=False: no result of the first link in the result store (Django Q2 would stop the
    # chain there); the cache keeps it whatever save says, as Django Q2's cache does.
    kept = [4, 2] if store == "cache" else [4]
    assert result_group(group, count=len(kept) + 1, wait=WAIT) == kept
    assert count_group(group, failures=True) == 1
    tasks = fetch_group(group)
    assert tasks[0].func == f"{T}.add" and tasks[0].result == 4, "the last link ran last"


def test_chain_object(store):
    from qhive_django.tasks import Chain

    chain = Chain()
    chain.append(f"{T}.add", 1, -1)
    chain.append(f"{T}.add", 2, 2, task_name=unique("second"))
    assert chain.length() == 2 and chain.current() is None
    chain.run()
    assert sorted(chain.result(wait=WAIT)) == [0, 4]
    assert chain.current() == 2
    assert {t.result for t in chain.fetch()} == {0, 4}


# --------------------------------------------------------------------------- one store only


@pytest.mark.parametrize("store", ["cache"], indirect=True)
def test_cached_result_expires_and_can_be_saved_to_the_database(store):
    from qhive_django.tasks import async_task, delete_cached, fetch, result
    from qhive_store_orm.models import Task

    short = async_task(f"{T}.add", 1, 1, cached=1)
    kept = async_task(f"{T}.add", 2, 2)
    assert result(short, wait=WAIT) == 2
    assert result(kept, wait=WAIT) == 4
    wait_until(lambda: result(short) is None, within=30, what="the 1 s cached result to expire")
    task = fetch(kept, cached=True)
    assert isinstance(task, Task) and not Task.objects.filter(pk=kept).exists()
    task.save()  # Django Q: a cached result becomes a permanent one
    assert Task.objects.get(pk=kept).result == 4
    assert delete_cached(kept) is True and result(kept) is None
    assert result(kept, cached=False) == 4, "the saved row is still there"


@pytest.mark.parametrize("store", ["orm"], indirect=True)
def test_orm_task_model_helpers(store):
    from qhive_django.tasks import async_task, result_group
    from qhive_store_orm.models import Task

    group = unique("m")
    ids = [async_task(f"{T}.add", i, i, group=group) for i in range(2)]
    async_task(f"{T}.boom", group=group)
    result_group(group, count=3, wait=WAIT)
    task = Task.get_task(ids[0])
    assert sorted(task.group_result()) == [0, 2] and task.group_count() == 3
    assert task.group_count(failures=True) == 1
    assert Task.get_result(ids[1]) == 2
    assert Task.get_task_group(group).count() == 3
    deleted, _ = task.group_delete(tasks=True)
    assert deleted == 3 and not Task.objects.filter(group=group).exists()
