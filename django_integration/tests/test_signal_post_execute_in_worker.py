"""Django Q2's ``post_execute_in_worker`` signal, in this process: ``sync`` tasks and a
drained queue. A real cluster's worker sending it is in ``tests/test_worker_signals.py``."""

import contextlib

import pytest
from qhive_django import signals
from qhive_django.conf import get_pipeline
from qhive_django.tasks import async_task, fetch, result

T = "qhive_testkit.tasks"


@contextlib.contextmanager
def receiving(sender=None, during=None):
    """Collect the keyword arguments of every ``post_execute_in_worker``; ``during(kwargs)``
    runs inside the receiver."""
    calls = []

    def receiver(sender, **kwargs):
        calls.append({"sender": sender, **kwargs})
        if during is not None:
            during(kwargs)

    signals.post_execute_in_worker.connect(receiver, sender=sender, weak=False)
    try:
        yield calls
    finally:
        signals.post_execute_in_worker.disconnect(receiver, sender=sender)


def test_sent_for_a_sync_task_with_func_and_the_task_with_its_outcome(q_cluster):
    from qhive_testkit.tasks import add

    q_cluster()
    with receiving() as calls:
        task_id = async_task(add, 2, 3, group="sums", sync=True)
    [call] = calls
    assert (call["sender"], call["func"]) == ("qhive", add)
    task = call["task"]
    assert (task["id"], task["group"], task["result"], task["success"]) == (task_id, "sums", 5,
                                                                             True)
    assert call["result"].result == 5 and result(task_id) == 5


def test_sent_in_sync_mode_before_the_failure_propagates(q_cluster):
    q_cluster(sync=True)
    with receiving(sender="django_q") as calls, pytest.raises(ValueError, match="nope"):
        async_task(f"{T}.boom", "nope")
    [call] = calls
    assert call["sender"] == "qhive" and call["task"]["success"] is False
    assert "ValueError: nope" in call["task"]["result"]


def test_sent_before_the_result_is_saved(q_cluster):
    q_cluster()
    seen = []
    with receiving(during=lambda kwargs: seen.append(fetch(kwargs["task"]["id"]))) as calls:
        task_id = async_task(f"{T}.add", 1, 1)
        get_pipeline().drain()
    assert [c["task"]["id"] for c in calls] == [task_id]
    assert seen == [None], "not saved yet"
    assert result(task_id) == 2


def test_a_failing_receiver_is_logged_and_changes_nothing(q_cluster, caplog):
    q_cluster()

    def broken(kwargs):
        raise RuntimeError("receiver bug")

    with receiving(during=broken) as calls:
        task_id = async_task(f"{T}.add", 1, 1, sync=True)
    assert len(calls) == 1 and result(task_id) == 2
    assert "post_execute_in_worker receiver" in caplog.text and "receiver bug" in caplog.text


def test_a_task_function_that_does_not_exist_is_sent_as_none(q_cluster):
    q_cluster()
    with receiving() as calls:
        task_id = async_task(f"{T}.no_such_function")
        get_pipeline().drain()
    [call] = calls
    assert call["func"] is None and call["task"]["success"] is False
    assert fetch(task_id).success is False
