"""The task pipeline in one process, on the in-memory drivers."""

import logging

import pytest
from qhive.config import Config
from qhive.errors import ConfigError
from qhive.pipeline import Pipeline
from qhive.plugins import hookimpl

T = "qhive_testkit.tasks"


def run_one(pipeline, func, *args, **options):
    task_id = pipeline.enqueue(func, args, **options)
    results = pipeline.drain()
    assert [r.id for r in results] == [task_id]
    return results[0]


def test_success_is_saved_and_acknowledged(make_pipeline):
    p = make_pipeline()
    result = run_one(p, f"{T}.add", 2, 3, group="g", task_name="adding")
    assert (result.success, result.result, result.name, result.group) == (True, 5, "adding", "g")
    assert result.func == f"{T}.add"
    assert p.result_store.get(result.id).result == 5
    assert p.broker.queue_size() == 0 and p.broker.lock_size() == 0


def test_callables_travel_by_dotted_path(make_pipeline):
    from qhive_testkit.tasks import add

    result = run_one(make_pipeline(), add, 1, 1)
    assert (result.func, result.result) == (f"{T}.add", 2)


def test_async_def_tasks_run(make_pipeline):
    assert run_one(make_pipeline(), f"{T}.async_add", 40, 2).result == 42


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        ("boom", "ValueError: boom"),
        ("leave", "SystemExit: 3"),
        ("interrupt", "KeyboardInterrupt"),
        ("does_not_exist", f"task function '{T}.does_not_exist' does not exist"),
    ],
)
def test_failures_are_saved_with_a_clear_message(make_pipeline, func, expected):
    p = make_pipeline()
    result = run_one(p, f"{T}.{func}")
    assert result.success is False
    assert expected in result.result
    assert p.result_store.get(result.id).success is False


def test_missing_module_is_a_clear_failure(make_pipeline):
    result = run_one(make_pipeline(), "no_such_package.tasks.work")
    assert "no module 'no_such_package'" in result.result


def test_failed_tasks_stay_for_redelivery_unless_acknowledged(make_pipeline):
    p = make_pipeline(retry=60)
    run_one(p, f"{T}.boom")
    assert p.broker.lock_size() == 1  # kept, comes back after retry
    p2 = make_pipeline(ack_failures=True)
    run_one(p2, f"{T}.boom")
    assert p2.broker.lock_size() == 0
    p3 = make_pipeline()
    run_one(p3, f"{T}.boom", ack_failure=True)
    assert p3.broker.lock_size() == 0


def test_max_attempts_acknowledges_after_the_last_attempt(make_pipeline):
    p = make_pipeline(retry=0.2, max_attempts=2)
    task_id = p.enqueue(f"{T}.boom", ())
    first = p.drain()
    assert [r.attempt_count for r in first] == [1] and p.broker.lock_size() == 1
    second = p.drain(timeout=3)
    assert [r.attempt_count for r in second] == [2]
    assert p.broker.lock_size() == 0 and p.broker.queue_size() == 0
    assert p.drain(timeout=0.5) == []
    assert p.result_store.get(task_id).attempt_count == 2


def test_save_false_keeps_no_success_but_keeps_failures(make_pipeline):
    p = make_pipeline()
    ok = run_one(p, f"{T}.add", 1, 2, save=False)
    assert p.result_store.get(ok.id) is None
    bad = run_one(p, f"{T}.boom", save=False, ack_failure=True)
    assert p.result_store.get(bad.id) is not None


def test_tampered_package_is_failed_and_never_run(make_pipeline, caplog):
    p = make_pipeline()
    package = bytearray(p.codec.encode({"id": "x" * 32, "func": f"{T}.boom", "args": (),
                                        "kwargs": {}}))
    package[-3] ^= 0xFF
    p.broker.enqueue(bytes(package))
    with caplog.at_level(logging.ERROR, logger="qhive"):
        assert p.drain() == []
    assert "signature does not match" in caplog.text
    assert p.broker.queue_size() == 0 and p.broker.lock_size() == 0
    assert p.result_store.get("x" * 32) is None


def test_package_from_another_cluster_name_is_rejected(make_pipeline, caplog):
    sender, receiver = make_pipeline(), make_pipeline()
    receiver.broker.enqueue(sender.codec.encode({"id": "y" * 32, "func": f"{T}.add"}))
    assert receiver.drain() == []
    assert "salt" in caplog.text


def test_hooks_see_the_lifecycle(make_pipeline):
    seen = []

    class Watcher:
        @hookimpl
        def qhive_pre_enqueue(self, task):
            if task["func"].endswith(".add"):
                task["kwargs"]["b"] = 10  # handlers may change the task before signing

        @hookimpl
        def qhive_pre_execute(self, func, task):
            seen.append(("pre_execute", func.__name__))

        @hookimpl(wrapper=True)
        def qhive_execute_task(self, func, task):
            result = yield
            return result * 2

        @hookimpl
        def qhive_task_succeeded(self, result):
            seen.append(("succeeded", result.result))

        @hookimpl
        def qhive_task_failed(self, result, error):
            seen.append(("failed", type(error).__name__))

        @hookimpl
        def qhive_post_execute(self, task, result):
            seen.append(("post_execute", result.success))

    p = make_pipeline()
    p.pm.register(Watcher())
    p.enqueue(f"{T}.add", (1,), {"b": 0})
    p.enqueue(f"{T}.boom", ())
    p.drain()
    assert seen == [
        ("pre_execute", "add"), ("succeeded", 22), ("post_execute", True),
        ("pre_execute", "boom"), ("failed", "ValueError"), ("post_execute", False),
    ]


def test_configured_reporters_receive_errors(make_pipeline, caplog):
    p = make_pipeline(error_reporter={"log": {}})
    with caplog.at_level(logging.ERROR):
        run_one(p, f"{T}.boom", "reported!")
        assert p.reporting.flush()
    assert any("reported!" in r.getMessage() or "reported!" in (r.exc_text or "")
               for r in caplog.records if r.name.startswith("qhive.reporters"))


def test_compressed_packages_round_trip(make_pipeline):
    assert run_one(make_pipeline(compress=True), f"{T}.add", "x" * 5000, "y").result.endswith("y")


def test_json_serializer_pipeline(make_pipeline):
    assert run_one(make_pipeline(serializer="json"), f"{T}.add", [1], [2]).result == [1, 2]


def test_missing_secret_key_is_a_clear_error(fresh_plugins):
    p = Pipeline(Config.from_dict({"broker": "memory", "result_store": "memory"}))
    with pytest.raises(ConfigError, match="needs a secret key"):
        p.enqueue(f"{T}.add", (1, 2))


@pytest.mark.parametrize(("package", "reason"), [
    ([1, 2, 3], "the package holds a list, not a task dict"),
    ({"func": f"{T}.add", "args": (1, 2), "kwargs": {}}, "the task package has no 'id'"),
    ({"id": "x", "func": f"{T}.add", "args": 5, "kwargs": {}, "started": None},
     "the task package's 'args' must be a tuple or list, got int"),
    ({"id": "x", "func": 42, "args": (), "kwargs": {}, "started": None},
     "the task package's 'func' must be a dotted path or a callable, got int"),
])
def test_signed_packages_that_are_not_tasks_are_failed_and_never_run(make_pipeline, caplog,
                                                                      package, reason):
    p = make_pipeline()
    p.broker.enqueue(p.codec.encode(package))
    with caplog.at_level(logging.ERROR, logger="qhive"):
        assert p.drain() == []
    assert reason in caplog.text
    assert p.broker.queue_size() == 0 and p.broker.lock_size() == 0  # failed, not redelivered


def test_a_failure_shows_the_task_frames_first(make_pipeline):
    """Not pluggy's and qhive's frames that lead to the task; all of them when the
    error is qhive's own."""
    failure = run_one(make_pipeline(), f"{T}.boom", "bad")
    frames = [line for line in failure.result.splitlines() if line.startswith('  File "')]
    assert frames and "qhive_testkit/tasks.py" in frames[0], failure.result
    assert not any("pluggy" in f or "qhive/pipeline.py" in f for f in frames), failure.result
    missing = run_one(make_pipeline(), "qhive_testkit.no_such.func")
    assert "qhive/task.py" in missing.result  # qhive's error: qhive's frames are the story


def test_a_broken_task_succeeded_hook_does_not_undo_the_result(make_pipeline, caplog):
    class Broken:
        @hookimpl
        def qhive_task_succeeded(self, result):
            raise RuntimeError("hook bug")

    p = make_pipeline()
    p.pm.register(Broken())
    try:
        with caplog.at_level(logging.ERROR, logger="qhive"):
            result = run_one(p, f"{T}.add", 1, 2)
    finally:
        for plugin in [x for x in p.pm.get_plugins() if isinstance(x, Broken)]:
            p.pm.unregister(plugin)
    assert p.result_store.get(result.id).result == 3
    assert p.broker.queue_size() == 0 and p.broker.lock_size() == 0
    assert "hook failed for task" in caplog.text


def test_for_thread_gives_drivers_of_their_own(make_pipeline):
    p = make_pipeline()
    copy = p.for_thread()
    assert copy.broker is not p.broker and copy.result_store is not p.result_store
    assert copy.owner is p
    task_id = p.enqueue(f"{T}.add", (1, 1))
    assert [r.id for r in copy.drain()] == [task_id]  # the same queue and results
    copy.close()
    assert p.result_store.get(task_id).result == 2
