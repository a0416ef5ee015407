"""The task API on the in-memory drivers: options, sync mode, results and waiting, AsyncTask."""

import itertools
import threading
import time

import pytest
from qhive.builtin.memory import MemoryResultStore
from qhive_django import signals
from qhive_django.conf import get_pipeline
from qhive_django.tasks import AsyncTask, async_task, fetch, queue_size, result

T = "qhive_testkit.tasks"


def echo(*args, **kwargs):
    """What the task function received."""
    return args, kwargs


hooked = []


def record_hook(task):
    hooked.append(task)


def broken_hook(task):
    raise RuntimeError("hook bug")


def run(task_id, cluster=None):
    """Drain the queue in this process, as a cluster would, and fetch the task."""
    get_pipeline(cluster).drain()
    return fetch(task_id, cluster=cluster)


def enqueued_tasks():
    """The task packages async_task builds, as pre_enqueue receivers see them."""
    seen = []

    def receiver(sender, task, **kwargs):
        seen.append(dict(task))

    signals.pre_enqueue.connect(receiver, weak=False)
    return seen, lambda: signals.pre_enqueue.disconnect(receiver)


@pytest.fixture
def packages():
    seen, stop = enqueued_tasks()
    yield seen
    stop()


# --------------------------------------------------------------------------- options


def test_options_never_reach_the_function(q_cluster, packages):
    q_cluster()
    task_id = async_task(echo, 1, x=2, group="g", save=True, timeout=5, ack_failure=True,
                         task_name="echoing", hook=f"{__name__}.record_hook")
    assert run(task_id).result == ((1,), {"x": 2})
    [task] = packages
    assert (task["name"], task["group"], task["save"], task["timeout"], task["ack_failure"],
            task["hook"]) == ("echoing", "g", True, 5, True, f"{__name__}.record_hook")


def test_q_options_let_the_function_have_an_option_name(q_cluster):
    q_cluster()
    task_id = async_task(echo, group="for the function", task_name="for the function too",
                         q_options={"group": "math", "task_name": "named"})
    found = run(task_id)
    assert found.result == ((), {"group": "for the function", "task_name": "for the function too"})
    assert (found.group, found.name) == ("math", "named")


def test_options_missing_from_q_options_are_still_options(q_cluster, packages):
    q_cluster()
    task_id = async_task(echo, 7, timeout=30, q_options={"group": "math"})
    assert run(task_id).result == ((7,), {})
    assert (packages[0]["timeout"], packages[0]["group"]) == (30, "math")


def test_unknown_q_options_key_is_an_error(q_cluster):
    q_cluster()
    with pytest.raises(TypeError, match="unknown q_options key 'grop' — did you mean 'group'"):
        async_task(echo, q_options={"grop": "math"})


@pytest.mark.parametrize("timeout", [0, -1, "5", True])
def test_bad_timeout_is_refused_at_enqueue(q_cluster, timeout):
    q_cluster()
    with pytest.raises(ValueError, match="timeout"):
        async_task(echo, timeout=timeout)


def test_float_and_none_timeouts_travel(q_cluster, packages):
    q_cluster(timeout=60)
    async_task(echo, timeout=2.5)
    async_task(echo, timeout=None)  # explicitly none for this task
    async_task(echo)  # the cluster's
    assert packages[0]["timeout"] == 2.5
    assert "timeout" in packages[1] and packages[1]["timeout"] is None
    assert "timeout" not in packages[2]


def test_callable_hook_travels_as_a_dotted_path(q_cluster, packages):
    q_cluster()
    async_task(echo, hook=record_hook)
    assert packages[0]["hook"] == f"{__name__}.record_hook"


def test_save_false_keeps_no_success(q_cluster):
    q_cluster()
    task_id = async_task(f"{T}.add", 1, 1, save=False)
    get_pipeline().drain()
    assert fetch(task_id) is None


def test_func_must_be_callable_or_a_path(q_cluster):
    q_cluster()
    with pytest.raises(TypeError, match="callable or a dotted path"):
        async_task(42)


# --------------------------------------------------------------------------- routing


def test_cluster_routes_to_that_clusters_queue(q_cluster):
    q_cluster(ALT_CLUSTERS={"long": {"timeout": 600}})
    task_id = async_task(f"{T}.add", 1, 2, cluster="long")
    assert (queue_size(), queue_size("long")) == (0, 1)
    assert get_pipeline().drain() == []
    assert run(task_id, cluster="long").result == 3
    assert fetch(task_id, cluster="long").cluster == "long"


def test_broker_instance_wins(q_cluster):
    q_cluster(ALT_CLUSTERS={"long": {}})
    broker = get_pipeline("long").broker
    async_task(f"{T}.add", 1, 2, broker=broker)
    assert (queue_size(), queue_size(broker=broker), queue_size(broker)) == (0, 1, 1)
    with pytest.raises(TypeError, match="qhive Broker"):
        async_task(f"{T}.add", 1, 2, broker="redis")


# --------------------------------------------------------------------------- sync


def test_sync_per_task_runs_and_saves_at_once(q_cluster):
    q_cluster()
    task_id = async_task(f"{T}.add", 2, 2, sync=True)
    assert result(task_id) == 4 and queue_size() == 0


def test_sync_globally(q_cluster):
    q_cluster(sync=True)
    task_id = async_task(f"{T}.add", 3, 3)
    assert result(task_id) == 6
    assert result(async_task(f"{T}.async_add", 40, 2)) == 42
    q_cluster(sync=True)
    task_id = async_task(f"{T}.add", 3, 3, sync=False)  # per task beats global
    assert (result(task_id), queue_size()) == (None, 1)


def test_sync_exceptions_propagate_and_the_failure_is_saved(q_cluster):
    q_cluster()
    with pytest.raises(ValueError, match="broken on purpose") as raised:
        async_task(f"{T}.boom", "broken on purpose", sync=True, task_name="doomed")
    assert "run with sync=True" in raised.value.__notes__[0]
    failure = fetch("doomed")
    assert failure.success is False and "ValueError: broken on purpose" in failure.result


def test_sync_sends_arguments_through_the_codec(q_cluster):
    q_cluster()
    with pytest.raises(Exception, match="lock"):
        async_task(echo, threading.Lock(), sync=True)  # could never reach a worker either


def test_async_def_tasks_run(q_cluster):
    q_cluster()
    task_id = async_task(f"{T}.async_add", 1, 2)
    assert run(task_id).result == 3


# --------------------------------------------------------------------------- hooks


def test_hook_is_called_with_the_saved_result(q_cluster):
    q_cluster()
    hooked.clear()
    task_id = async_task(f"{T}.add", 1, 2, hook=record_hook)
    failed_id = async_task(f"{T}.boom", hook=f"{__name__}.record_hook")
    get_pipeline().drain()
    assert [(h.id, h.success) for h in hooked] == [(task_id, True), (failed_id, False)]
    # Another store than the ORM one: an unsaved Task, as Django Q's hooks expect.
    from qhive_store_orm.models import Task

    assert isinstance(hooked[0], Task) and hooked[0].result == 3
    assert not Task.objects.filter(pk=task_id).exists()


def test_broken_hooks_are_logged_not_raised(q_cluster, caplog):
    q_cluster()
    first = async_task(f"{T}.add", 1, 2, hook=broken_hook)
    second = async_task(f"{T}.add", 1, 2, hook="no_such_module.hook")
    get_pipeline().drain()
    assert result(first) == result(second) == 3
    assert "hook bug" in caplog.text
    assert "malformed return hook 'no_such_module.hook'" in caplog.text


# --------------------------------------------------------------------------- results


def test_fetch_and_result_by_id_and_by_name(q_cluster):
    q_cluster()
    task_id = async_task(f"{T}.add", 5, 5, task_name="ten")
    assert result(task_id) is None and fetch(task_id) is None
    get_pipeline().drain()
    assert result(task_id) == result("ten") == 10
    found = fetch("ten")
    assert (found.id, found.name, found.success, found.func) == (task_id, "ten", True,
                                                                 f"{T}.add")
    import uuid

    assert result(uuid.UUID(task_id)) == 10


def test_a_failure_has_the_error_as_its_result(q_cluster):
    q_cluster()
    task_id = async_task(f"{T}.boom", "nope")
    get_pipeline().drain()
    assert "ValueError: nope" in result(task_id)


def test_a_task_that_returned_none_is_found(q_cluster):
    q_cluster()
    task_id = async_task(f"{T}.nothing")
    get_pipeline().drain()
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(result(task_id, wait=-1)))
    waiter.start()
    waiter.join(timeout=10)
    assert not waiter.is_alive(), "result(wait=-1) of a task that returned None never returned"
    assert answers == [None]
    assert fetch(task_id, wait=-1).success is True


def test_wait_returns_once_the_result_is_saved(q_cluster):
    q_cluster()
    task_id = async_task(f"{T}.add", 20, 22)
    pipeline = get_pipeline()
    saver = threading.Timer(0.2, pipeline.drain)
    saver.start()
    try:
        assert result(task_id, wait=2000) == 42
    finally:
        saver.join()


def test_wait_gives_up_after_wait_milliseconds(q_cluster):
    q_cluster()
    started = time.monotonic()
    assert result("ab" * 16, wait=100) is None
    assert time.monotonic() - started >= 0.1


def test_waiting_backs_off_instead_of_hammering(q_cluster, monkeypatch):
    q_cluster()
    looks = []
    original = MemoryResultStore.get

    def counting_get(self, task_id):
        looks.append(time.monotonic())
        return original(self, task_id)

    monkeypatch.setattr(MemoryResultStore, "get", counting_get)
    assert result("cd" * 16, wait=1000) is None
    # Polling every 10 ms (Django Q2) would look 100 times in a second.
    assert len(looks) <= 15
    gaps = [b - a for a, b in itertools.pairwise(looks)]
    assert max(gaps) < 0.3


# --------------------------------------------------------------------------- AsyncTask


def test_async_task_object(q_cluster):
    q_cluster(sync=True)
    task = AsyncTask(f"{T}.add", 1, 2, group="sums")
    assert task.result() is None and task.group == "sums"
    task.run()
    assert (task.result(), task.fetch().group) == (3, "sums")
    task.args = (2, 3)  # Django Q2: only options invalidate the result
    assert task.started
    task.save = True
    assert not task.started and task.result() is None
    first = task.id
    task.run()
    assert task.id != first and task.result(wait=100) == 5


def test_async_task_object_options_go_to_q_options(q_cluster):
    q_cluster()
    task = AsyncTask(echo, group="for the function", q_options={"task_name": "echo"})
    task.group = "g"
    task.sync = True
    assert task.kwargs == {"group": "for the function",
                           "q_options": {"task_name": "echo", "group": "g", "sync": True}}
    assert task.cached is False
    task.run()
    found = task.fetch()
    assert (found.name, found.group) == ("echo", "g")
    assert found.result == ((), {"group": "for the function"})
    assert task.result_group() == [((), {"group": "for the function"})]
    assert [t.id for t in task.fetch_group()] == [task.id]
