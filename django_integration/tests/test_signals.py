"""Django Q's signals, fed by the pluggy hooks, in one process on the in-memory drivers."""

import contextlib

import pytest
from django.db import connection, transaction
from qhive_django import signals
from qhive_django.conf import get_pipeline, plugin_manager
from qhive_django.tasks import async_task, fetch, result

T = "qhive_testkit.tasks"


@contextlib.contextmanager
def receiving(signal, sender=None):
    """Collect the keyword arguments of every send of ``signal``."""
    calls = []

    def receiver(sender, **kwargs):
        calls.append({"sender": sender, **kwargs})

    signal.connect(receiver, sender=sender, weak=False)
    try:
        yield calls
    finally:
        signal.disconnect(receiver, sender=sender)


def test_enqueue_and_execute_signals(q_cluster):
    from qhive_testkit.tasks import add

    q_cluster()
    with receiving(signals.pre_enqueue) as enqueued, receiving(signals.pre_execute) as executed, \
            receiving(signals.post_execute) as finished:
        task_id = async_task(add, 2, 3, group="sums")
        assert [(c["sender"], c["task"]["id"]) for c in enqueued] == [("qhive", task_id)]
        assert enqueued[0]["task"]["func"] == f"{T}.add"
        assert executed == []
        get_pipeline().drain()

    [call] = executed
    assert (call["sender"], call["func"], call["task"]["id"]) == ("qhive", add, task_id)
    [call] = finished
    assert call["sender"] == "qhive"
    task = call["task"]  # Django Q's post_execute task: the package with its outcome
    assert (task["id"], task["group"], task["result"], task["success"]) == (task_id, "sums", 5,
                                                                             True)
    assert call["result"].id == task_id and call["result"].result == 5


def test_receivers_connected_the_django_q_way_receive_them(q_cluster):
    q_cluster()
    with receiving(signals.pre_enqueue, sender="django_q") as enqueued:
        task_id = async_task(f"{T}.add", 1, 1)
    assert [c["task"]["id"] for c in enqueued] == [task_id]


def test_pre_enqueue_receivers_may_change_the_task(q_cluster):
    q_cluster()

    def double_b(sender, task, **kwargs):
        task["args"] = (task["args"][0], task["args"][1] * 2)

    signals.pre_enqueue.connect(double_b)
    try:
        task_id = async_task(f"{T}.add", 1, 10)
    finally:
        signals.pre_enqueue.disconnect(double_b)
    get_pipeline().drain()
    assert result(task_id) == 21


def test_a_failing_pre_execute_receiver_fails_the_task(q_cluster):
    q_cluster()

    def refuse(sender, task, **kwargs):
        raise PermissionError("not today")

    task_id = async_task(f"{T}.add", 1, 1)
    signals.pre_execute.connect(refuse)
    try:
        get_pipeline().drain()
    finally:
        signals.pre_execute.disconnect(refuse)
    found = fetch(task_id)
    assert found.success is False and "PermissionError: not today" in found.result


def test_a_failing_post_execute_receiver_is_logged_not_raised(q_cluster, caplog):
    q_cluster()

    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    task_id = async_task(f"{T}.add", 1, 1)
    signals.post_execute.connect(broken)
    try:
        get_pipeline().drain()
    finally:
        signals.post_execute.disconnect(broken)
    assert result(task_id) == 2
    assert "receiver bug" in caplog.text


def test_post_spawn_is_sent_when_a_worker_starts(q_cluster):
    q_cluster()
    with receiving(signals.post_spawn) as spawned:
        plugin_manager().hook.qhive_worker_spawned(name="Process-1:2")
    assert spawned == [{"sender": "qhive", "signal": signals.post_spawn,
                        "proc_name": "Process-1:2"}]


def test_workers_drop_old_connections_around_each_task(q_cluster, database):
    from django.db import connections

    q_cluster()
    conn = connections[database]
    conn.ensure_connection()
    before = conn.connection
    with pytest.MonkeyPatch.context() as mp:  # as if CONN_MAX_AGE had run out
        mp.setattr(conn, "close_at", 0)
        async_task(f"{T}.add", 1, 1)
        get_pipeline().drain()
    assert conn.connection is None or conn.connection is not before


def test_connections_in_a_transaction_are_left_alone(q_cluster):
    q_cluster()
    with transaction.atomic():
        before = connection.connection
        async_task(f"{T}.add", 1, 1)
        get_pipeline().drain()
        assert connection.connection is before and connection.in_atomic_block
