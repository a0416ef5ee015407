"""Groups, ``async_iter`` / ``Iter`` and ``async_chain`` / ``Chain`` in this process:
the queue is drained here as a cluster would (``Pipeline.drain`` / ``process``).

The same behaviours against real ``qcluster`` processes, on the ORM and the
cache result stores, are in ``tests/test_task_api.py``.
"""

import threading
import time

import pytest
from qhive.task import derived_id
from qhive_django.conf import get_pipeline
from qhive_django.tasks import (
    Chain,
    Iter,
    async_chain,
    async_iter,
    async_task,
    count_group,
    delete_group,
    fetch,
    fetch_group,
    queue_size,
    result,
    result_group,
)

T = "qhive_testkit.tasks"


def drain(cluster=None):
    return get_pipeline(cluster).drain()


def drain_backwards(cluster=None):
    """Run everything waiting, last enqueued first: completion order != enqueue order."""
    pipeline = get_pipeline(cluster)
    while messages := pipeline.broker.dequeue(count=1000, timeout=0):
        for message in reversed(messages):
            pipeline.process(message)


# --------------------------------------------------------------------------- groups


def test_group_results_counts_and_fetch(q_cluster):
    q_cluster()
    ok = [async_task(f"{T}.add", i, i, group="sums") for i in range(3)]
    bad = async_task(f"{T}.boom", "no", group="sums")
    async_task(f"{T}.add", 9, 9, group="other")
    drain()
    assert sorted(result_group("sums")) == [0, 2, 4]
    assert len(result_group("sums", failures=True)) == 4
    assert (count_group("sums"), count_group("sums", failures=True)) == (4, 1)
    fetched = fetch_group("sums")
    assert sorted(t.id for t in fetched) == sorted([*ok, bad])
    assert [t.stopped for t in fetched] == sorted((t.stopped for t in fetched), reverse=True)
    assert sorted(t.id for t in fetch_group("sums", failures=False)) == sorted(ok)
    assert result_group("never") is None and fetch_group("never") is None


def test_result_group_waits_for_count(q_cluster):
    q_cluster()
    for i in range(3):
        async_task(f"{T}.add", i, 1, group="later")
    assert result_group("later", count=3, wait=50) is None, "not run yet: gives up after wait"
    worker = threading.Timer(0.3, drain)
    worker.start()
    try:
        assert sorted(result_group("later", count=3, wait=20_000)) == [1, 2, 3]
    finally:
        worker.join()


def test_delete_group_on_a_store_without_labels_deletes_results(q_cluster):
    q_cluster()
    for i in range(2):
        async_task(f"{T}.add", i, i, group="gone")
    drain()
    assert delete_group("gone") == 2
    assert count_group("gone") == 0


def test_orm_store_group_helpers(q_cluster):
    from qhive_store_orm.models import Task

    q_cluster(result_store="orm")
    ids = [async_task(f"{T}.add", i, 1, group="orm-g") for i in range(3)]
    failed = async_task(f"{T}.boom", group="orm-g")
    drain()
    rows = fetch_group("orm-g")
    assert sorted(rows.values_list("id", flat=True)) == sorted([*ids, failed])  # a QuerySet
    task = Task.get_task(ids[0])
    assert sorted(task.group_result()) == [1, 2, 3]
    assert len(task.group_result(failures=True)) == 4
    assert (task.group_count(), task.group_count(failures=True)) == (4, 1)
    assert Task.get_result(ids[1]) == 2
    assert Task.get_task_group("orm-g", failures=False).count() == 3
    assert delete_group("orm-g") == 4, "tasks=False clears the group label only"
    assert Task.objects.filter(pk__in=ids).count() == 3 and count_group("orm-g") == 0
    again = [async_task(f"{T}.add", 5, 5, group="orm-h") for _ in range(2)]
    drain()
    deleted, _ = delete_group("orm-h", tasks=True)
    assert deleted == 2 and not Task.objects.filter(pk__in=again).exists()
    assert Task.get_task(ids[0]).group_result() is None, "no group: None"


# --------------------------------------------------------------------------- iter


def test_async_iter_collates_in_argument_order(q_cluster):
    q_cluster()
    group = async_iter(f"{T}.add", [(i, 100) for i in range(10)])
    assert result(group) is None
    drain_backwards()
    assert result(group) == [i + 100 for i in range(10)]
    collated = fetch(group)
    assert collated.id == group and collated.success and collated.group is None
    assert collated.args == tuple((i, 100) for i in range(10))
    assert count_group(group) == 0, "the parts are gone once collated"


def test_async_iter_single_arguments_and_kwargs_reach_every_part(q_cluster):
    q_cluster()
    group = async_iter(f"{T}.sleep", [0, 0.01], result="done")
    drain()
    assert result(group) == ["done", "done"]


def test_async_iter_parts_survive_save_limit(q_cluster):
    from qhive_store_orm.models import Task

    q_cluster(result_store="orm", save_limit=2)
    group = async_iter(f"{T}.add", [(i, 0) for i in range(12)])
    pipeline = get_pipeline()
    for _ in range(12):  # one part per batch: save_limit prunes after every one
        [message] = pipeline.broker.dequeue(timeout=1)
        pipeline.process(message)
    assert result(group) == list(range(12))
    assert not Task.objects.filter(group=group).exists()


def test_async_iter_with_a_failing_part(q_cluster):
    q_cluster(ack_failures=True)
    group = async_iter(f"{T}.add", [(1, 1), (1, "x"), (2, 2)])
    drain()
    collated = fetch(group)
    assert not collated.success
    assert collated.result[0] == 2 and collated.result[2] == 4
    assert "TypeError" in collated.result[1]


def test_async_iter_waits_for_a_retried_part(q_cluster):
    q_cluster(max_attempts=2)
    group = async_iter(f"{T}.boom", ["once"])
    drain()
    assert result(group) is None, "the part fails, but it will be delivered again"


def test_empty_and_sync_iters(q_cluster):
    q_cluster()
    assert result(async_iter(f"{T}.add", [])) == []
    group = async_iter(f"{T}.add", [(1, 2), (3, 4)], sync=True)
    assert result(group) == [3, 7] and queue_size() == 0


def test_iter_object(q_cluster):
    q_cluster()
    it = Iter(f"{T}.add", args=[(1, 1)])
    assert it.append(2, 2) == 2 and it.length() == 2
    assert it.result() is None and it.fetch() is None, "not run yet"
    it.run()
    drain()
    assert it.result(wait=1000) == [2, 4] and it.fetch().result == [2, 4]
    it.append(3, 3)
    assert not it.started and it.result() is None


def test_iter_options_are_checked(q_cluster):
    q_cluster()
    with pytest.raises(TypeError, match="sets 'group' itself"):
        async_iter(f"{T}.add", [(1, 1)], group="mine")
    with pytest.raises(TypeError, match="call async_iter"):
        async_task(f"{T}.add", 1, 1, iter_count=3)


# --------------------------------------------------------------------------- chains


def test_async_chain_runs_links_in_order(q_cluster, django_project):
    q_cluster()
    links = [(f"{T}.add", (1, 2)), (f"{T}.add", (3, 4), {"task_name": "second"}),
             f"{T}.nothing"]
    group = async_chain(links)
    assert len(links) == 3, "the list given is not changed"
    assert queue_size() == 1, "one link at a time"
    drain()
    tasks = fetch_group(group)
    assert [t.func for t in tasks][::-1] == [f"{T}.add", f"{T}.add", f"{T}.nothing"]
    assert [t.result for t in tasks][::-1] == [3, 7, None]
    assert tasks[1].name == "second"


def test_chain_goes_on_after_an_unsaved_link(q_cluster):
    q_cluster()
    group = async_chain([(f"{T}.add", (1, 1), {"save": False}), (f"{T}.add", (2, 2))])
    drain()
    assert result_group(group) == [4], "Django Q2 stops a chain at a link with save=False"


def test_chain_goes_on_after_a_final_failure(q_cluster):
    q_cluster(max_attempts=1)
    group = async_chain([(f"{T}.boom",), (f"{T}.add", (2, 2))])
    drain()
    assert result_group(group) == [4] and count_group(group, failures=True) == 1


def test_chain_waits_while_a_failed_link_will_be_retried(q_cluster):
    q_cluster(retry=0.5, max_attempts=2)
    group = async_chain([(f"{T}.boom",), (f"{T}.add", (2, 2))])
    drain()
    assert count_group(group) == 1 and queue_size() == 0, "waits for the retry"
    deadline = time.monotonic() + 30
    while result_group(group) is None and time.monotonic() < deadline:
        get_pipeline().drain(timeout=0.5)
    assert result_group(group) == [4]
    assert fetch_group(group, failures=True)[1].attempt_count == 2


def test_a_redelivered_link_sends_its_follow_up_once(q_cluster):
    q_cluster()
    pipeline = get_pipeline()
    group = async_chain([(f"{T}.add", (1, 1)), (f"{T}.add", (2, 2))])
    [message] = pipeline.broker.dequeue()
    task = pipeline.decode(message)
    pipeline.run_here(task, message)
    pipeline.run_here(task)  # the same link again, as after a crash before its ack
    assert queue_size() == 2
    drain()
    assert sorted(result_group(group)) == [2, 4] and count_group(group) == 2
    first = fetch_group(group)[1]
    assert fetch(derived_id(first.id, "next")).result == 4


def test_chain_link_routed_to_another_cluster(q_cluster):
    q_cluster(ALT_CLUSTERS={"long": {}})
    group = async_chain([(f"{T}.add", (1, 1)), (f"{T}.add", (2, 2), {"cluster": "long"}),
                         (f"{T}.add", (3, 3))])
    drain()
    assert (queue_size(), queue_size("long")) == (0, 1)
    assert drain() == []
    drain("long")
    drain("long")  # the third link stays in the cluster that ran the second
    clusters = [t.cluster for t in fetch_group(group)][::-1]
    assert clusters == [get_pipeline().config.cluster_name, "long", "long"]


def test_sync_chain_runs_at_once(q_cluster):
    q_cluster()
    group = async_chain([(f"{T}.add", (1, 1)), (f"{T}.boom",), (f"{T}.add", (2, 2))],
                        sync=True)
    assert sorted(result_group(group)) == [2, 4] and queue_size() == 0


def test_chain_object(q_cluster):
    q_cluster()
    chain = Chain()
    chain.append(f"{T}.add", 1, -1)
    assert chain.append(f"{T}.add", 1, 1) == 2 and chain.length() == 2
    assert chain.result() is None and chain.current() is None
    group = chain.run()
    assert chain.current() == 0
    drain()
    assert chain.current() == 2
    assert sorted(chain.result(wait=1000)) == [0, 2]
    assert len(chain.fetch()) == 2
    chain.append(f"{T}.add", 5, 5)
    assert not chain.started and count_group(group) == 0, "earlier results leave the group"
    chain.run()
    drain()
    assert chain.group == group and sorted(chain.result(wait=1000)) == [0, 2, 10]


def test_bad_chains(q_cluster):
    q_cluster()
    with pytest.raises(ValueError, match="at least one link"):
        async_chain([])
    with pytest.raises(TypeError, match="a chain link is func"):
        async_chain([(f"{T}.add", (1,), {}, "extra")])
    with pytest.raises(TypeError, match="whole chain"):
        async_chain([(f"{T}.add", (1, 1), {"group": "mine"})])
