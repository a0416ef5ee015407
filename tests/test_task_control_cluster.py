"""Task control on real ``manage.py qcluster`` processes, on the Redis broker and on
the ORM broker (PostgreSQL and SQLite): delays that survive a restart, per-task
retry policies with a backoff, priorities. Results go to the ORM store of the
test's database. The option checks themselves: core/tests/test_task_control.py.
"""

from __future__ import annotations

import json
import time

import pytest
from qhive_testkit.outcomes import get_broker, tasks_of
from qhive_testkit.qcluster import wait_until
from qhive_testkit.services import redis_url, require

T = "qhive_testkit.tasks"


@pytest.fixture(params=["redis", "orm-postgres", "orm-sqlite"])
def settings_for(request, django_project, cluster_settings):
    """``settings_for(**q_cluster)``: the test's Q_CLUSTER on this broker."""
    if request.param == "redis":
        require("redis")
        return lambda **q: cluster_settings(redis=redis_url(), **q)
    database = "postgres" if request.param == "orm-postgres" else "default"
    if database == "postgres":
        require("postgres")
        if database not in django_project.aliases:
            pytest.skip("postgres came up after the test session started")
    return lambda **q: cluster_settings(database, **q)


def lines(path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]


def ran(path, value) -> list[float]:
    """When the recorded task(s) with first value ``value`` ran."""
    return [line["at"] for line in lines(path) if line["values"][:1] == [value]]


def test_countdown_runs_between_5_and_6_s_after_enqueue_across_a_restart(
        settings_for, qcluster, tmp_path):
    from qhive_django.tasks import async_task, fetch

    q = settings_for()
    path = tmp_path / "runs.jsonl"
    cluster = qcluster(q)
    enqueued = time.time()
    late = async_task(f"{T}.record", str(path), "late", countdown=5)
    async_task(f"{T}.record", str(path), "now")
    wait_until(lambda: ran(path, "now"), within=30, what="the undelayed task")
    assert not ran(path, "late"), "the delayed task ran at once"
    assert cluster.stop() == 0
    qcluster(q)  # a new cluster, before the delay is over
    task = fetch(late, wait=30_000)
    assert task is not None and task.success
    [at] = ran(path, "late")
    assert 5 <= at - enqueued <= 6, f"countdown=5 ran {at - enqueued:.2f} s after enqueue"


def test_a_task_failing_twice_with_exponential_backoff_succeeds_on_its_third_attempt(
        settings_for, qcluster, tmp_path):
    from qhive_django.tasks import async_task, fetch

    q = settings_for(retry=60)  # a retry comes from the backoff, not from 'retry'
    path = tmp_path / "attempts.jsonl"
    cluster = qcluster(q)
    task_id = async_task(f"{T}.flaky", str(path), 2, max_attempts=3, backoff="exponential")
    failed = wait_until(lambda: (t := fetch(task_id)) and not t.success and t, within=30,
                        what="a failed attempt")  # the first, unless this test was slow
    assert failed.attempt_count in (1, 2)
    assert f"ConnectionError: attempt {failed.attempt_count} failed" in failed.result
    assert failed.next_attempt is not None and failed.next_attempt > failed.stopped, (
        "fetch() must tell when the next attempt is")
    done = wait_until(lambda: (t := fetch(task_id)) and t.success and t, within=30,
                      what="the third attempt's success")
    assert (done.result, done.attempt_count, done.next_attempt) == (3, 3, None)
    one, two, three = ran(path, "attempt")
    assert two - one < three - two, f"the gaps did not grow: {two - one:.2f} s, then " \
                                    f"{three - two:.2f} s"
    assert two - one >= 0.5, "the first wait of backoff='exponential' is 0.5 to 1 s"
    log = cluster.log()
    assert log.count("Failed 'qhive_testkit.tasks.flaky'") == 2
    assert log.count("Processed 'qhive_testkit.tasks.flaky'") == 1
    wait_until(lambda: get_broker().queue_size() == 0 and get_broker().lock_size() == 0,
               within=10, what="the message acknowledged")


def test_an_error_not_in_retry_on_is_final_at_once(settings_for, qcluster, tmp_path):
    from qhive_django.tasks import async_task, fetch

    q = settings_for(retry=2)
    path = tmp_path / "attempts.jsonl"
    cluster = qcluster(q)
    task_id = async_task(f"{T}.flaky", str(path), 5, "KeyError", retry_on=[ConnectionError],
                         max_attempts=5, backoff=0.2)
    task = fetch(task_id, wait=30_000)
    assert not task.success and "KeyError" in task.result and task.next_attempt is None
    time.sleep(3)  # past 'retry' and the backoff: nothing comes back
    assert len(ran(path, "attempt")) == 1
    assert fetch(task_id).attempt_count == 1
    assert get_broker().lock_size() == 0, "the final failure was not acknowledged"
    assert cluster.stop() == 0


def test_high_priority_tasks_start_before_the_next_20_low_ones(settings_for, qcluster,
                                                                tmp_path):
    from qhive_django.tasks import async_task

    q = settings_for()
    path = tmp_path / "order.jsonl"
    cluster = qcluster(q)
    for n in range(1000):  # 10 ms each: 5 s of work for two workers
        async_task(f"{T}.record_slowly", str(path), 0.01, "low", n, priority=-3)
    wait_until(lambda: len(lines(path)) >= 50, within=60, what="50 low tasks run")
    sent = time.time()
    for n in range(10):
        async_task(f"{T}.record_slowly", str(path), 0.01, "high", n, priority=5)
    wait_until(lambda: len(ran(path, "high")) == 10, within=60, what="the 10 high ones")
    order = [line["values"][0] for line in lines(path) if line["at"] >= sent]
    last_high = max(i for i, value in enumerate(order) if value == "high")
    low_before = order[:last_high].count("low")
    assert low_before <= 20, f"{low_before} low-priority tasks started between the urgent " \
                             f"ones' enqueue and the last of them"
    wait_until(lambda: tasks_of(q).count() >= 1010, within=120, what="every task done")
    assert cluster.stop() == 0
