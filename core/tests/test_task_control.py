"""Task control options, before any broker: what ``async_task`` accepts, what it
refuses and why, what travels to the broker, and what a failed attempt becomes.
Real clusters on Redis and the ORM broker: tests/test_task_control_cluster.py."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from qhive.builtin.memory import MemoryBroker
from qhive.config import Config
from qhive.contracts import Capabilities
from qhive.errors import UnsupportedOption
from qhive.task_control import Backoff, delivery, plan_retry, prepare

NOW = dt.datetime(2026, 12, 8, 12, 0, tzinfo=dt.UTC)


class DelayingBroker(MemoryBroker):
    """Declares what the option checks look at; never asked to deliver here."""

    capabilities = dataclasses.replace(MemoryBroker.capabilities, delay=True, priority=True)


def prepared(broker=None, **options):
    prepare(options, DelayingBroker("control") if broker is None else broker, now=NOW)
    return options


def test_a_plain_task_is_left_alone_and_travels_plain():
    options = {"group": "g", "timeout": 3}
    prepare(options, MemoryBroker("control"), now=NOW)
    assert options == {"group": "g", "timeout": 3}
    assert delivery({"id": "x", "group": "g"}) == {}


def test_countdown_becomes_an_eta_and_the_broker_gets_the_delay_left():
    options = prepared(countdown=5)
    assert options == {"eta": NOW + dt.timedelta(seconds=5)}
    assert delivery(options, now=NOW + dt.timedelta(seconds=1)) == {"delay": 4.0}
    assert delivery(options, now=NOW + dt.timedelta(seconds=9)) == {}, "past due: no delay"


def test_an_eta_is_kept_in_utc():
    plus_two = dt.timezone(dt.timedelta(hours=2))
    options = prepared(eta=dt.datetime(2026, 12, 8, 14, 0, 30, tzinfo=plus_two))
    assert options["eta"] == NOW + dt.timedelta(seconds=30)
    assert options["eta"].tzinfo is dt.UTC


def test_a_chain_links_countdown_counts_from_when_it_is_sent():
    assert delivery({"countdown": 2.5}) == {"delay": 2.5}


def test_priority_travels_and_zero_is_the_default():
    assert delivery(prepared(priority=7)) == {"priority": 7}
    assert prepared(priority=0) == {}


@pytest.mark.parametrize(("options", "error", "says"), [
    ({"countdown": -1}, ValueError, "countdown=...) must be a number of seconds >= 0"),
    ({"countdown": float("inf")}, ValueError, "countdown"),
    ({"countdown": True}, ValueError, "countdown"),
    ({"eta": dt.datetime(2026, 12, 8, 12, 0)}, ValueError, "timezone-aware datetime"),
    ({"eta": "tomorrow"}, ValueError, "timezone-aware datetime"),
    ({"eta": NOW, "countdown": 1}, TypeError, "eta= or countdown=, not both"),
    ({"priority": 11}, ValueError, "an int from -10 to 10 (higher runs first"),
    ({"priority": 1.5}, ValueError, "priority"),
    ({"max_attempts": -1}, ValueError, "max_attempts=...) must be an int >= 1"),
    ({"max_attempts": "3"}, ValueError, "max_attempts"),
    ({"retry_on": [ValueError, 3]}, TypeError, "retry_on=...) takes exception classes"),
    ({"retry_on": dict}, TypeError, "retry_on"),
    ({"backoff": "linear"}, ValueError, "'fixed' or 'exponential'"),
    ({"backoff": -2}, ValueError, "base must be a number of seconds > 0"),
    ({"backoff": {"kind": "fixed", "step": 3}}, ValueError, "backoff has no 'step'"),
])
def test_bad_values_are_refused_at_enqueue(options, error, says):
    with pytest.raises(error) as caught:
        prepared(**options)
    assert says in str(caught.value)


@pytest.mark.parametrize(("option", "capability"), [
    ({"countdown": 5}, "delay"), ({"eta": NOW}, "delay"), ({"backoff": 2}, "delay"),
    ({"priority": 3}, "priority"),
])
def test_a_broker_that_cannot_keep_an_option_says_so_at_enqueue(option, capability):
    with pytest.raises(UnsupportedOption) as caught:
        prepared(MemoryBroker("plain-queue"), **option)
    message = str(caught.value)
    name = next(iter(option))
    assert f"async_task({name}=...)" in message
    assert "MemoryBroker (queue 'plain-queue')" in message
    assert f"Capabilities.{capability}" in message


def test_a_backoff_needs_receipts():
    class NoReceipts(DelayingBroker):
        capabilities = Capabilities(delay=True)

    with pytest.raises(UnsupportedOption, match=r"backoff=...\) needs a broker with receipts"):
        prepared(NoReceipts("q"), backoff=1)


def test_retry_policy_travels_as_plain_values():
    options = prepared(retry_on=(ConnectionError, "myapp.errors.Flaky"), backoff="exponential",
                       max_attempts=3)
    assert options == {
        "retry_on": ["builtins.ConnectionError", "myapp.errors.Flaky"],
        "backoff": {"kind": "exponential", "base": 1.0, "cap": 600.0, "jitter": True},
        "max_attempts": 3,
    }


def test_fixed_backoff_from_seconds():
    assert Backoff.of(7).delay(1) == Backoff.of(7).delay(5) == 7


def test_exponential_backoff_doubles_up_to_its_cap_and_jitter_never_shrinks_a_gap():
    plain = Backoff(base=2, cap=20, jitter=False)
    assert [plain.delay(n) for n in range(1, 7)] == [2, 4, 8, 16, 20, 20]
    jittered = Backoff(base=2, cap=1000)
    for n in range(1, 8):
        gaps = [jittered.delay(n) for _ in range(50)]
        assert all(2 ** (n - 1) <= g <= 2 ** n for g in gaps)  # half of it to all of it
    assert Backoff(base=1).delay(10_000) == pytest.approx(600, rel=0.5)  # capped, no overflow


def test_plan_without_a_policy_leaves_the_cluster_rules():
    assert plan_retry({"id": "x"}, ValueError(), 1, Config()) is None


def test_plan_retries_until_max_attempts_with_growing_waits():
    task = {"max_attempts": 3, "backoff": {"kind": "exponential", "base": 1.0, "cap": 60.0,
                                           "jitter": False}}
    first, second, third = (plan_retry(task, RuntimeError(), n, Config()) for n in (1, 2, 3))
    assert (first.again, first.delay) == (True, 1.0)
    assert (second.again, second.delay) == (True, 2.0)
    assert not third.again, "the third failure of max_attempts=3 is final"


def test_plan_without_backoff_comes_back_after_retry_as_in_django_q2():
    plan = plan_retry({"max_attempts": 5}, RuntimeError(), 1, Config())
    assert plan.again and plan.delay is None


def test_the_tasks_max_attempts_wins_over_the_clusters():
    assert not plan_retry({"max_attempts": 2}, None, 2, Config(max_attempts=10)).again
    assert plan_retry({"retry_on": ["ValueError"]}, ValueError(), 9, Config()).again, \
        "no limit anywhere: tried again"
    assert not plan_retry({"retry_on": ["ValueError"]}, ValueError(), 2,
                          Config(max_attempts=2)).again


class Flaky(ConnectionError):
    pass


def test_only_errors_of_retry_on_are_tried_again():
    task = {"retry_on": ["builtins.ConnectionError"], "max_attempts": 5}
    assert plan_retry(task, Flaky(), 1, Config()).again, "a subclass matches"
    assert not plan_retry(task, KeyError(), 1, Config()).again
    by_short_name = {"retry_on": ["ConnectionError"]}
    assert plan_retry(by_short_name, Flaky(), 1, Config()).again
    assert plan_retry(task, None, 1, Config()).again, "a worker that died is tried again"


def test_a_broken_backoff_in_a_package_retries_as_django_q2_would(caplog):
    plan = plan_retry({"id": "t1", "backoff": {"kind": "sideways"}}, RuntimeError(), 1, Config())
    assert plan.again and plan.delay is None
    assert "task t1: backoff kind must be 'fixed' or 'exponential'" in caplog.text


@pytest.mark.parametrize(("key", "value", "says"), [
    ("eta", "soon", "'eta' must be an aware datetime"),
    ("priority", "high", "'priority' must be an int"),
    ("max_attempts", -2, "'max_attempts' must be an int >= 0"),
    ("retry_on", [ValueError], "'retry_on' must be a list of class names"),
    ("backoff", 3, "'backoff' must be a dict"),
])
def test_a_package_with_a_malformed_control_option_is_refused(key, value, says):
    from qhive.errors import BadPackage
    from qhive.task import check_package, new_task

    with pytest.raises(BadPackage, match=says):
        check_package(new_task("math.floor", (1,), **{key: value}))


def test_a_chain_links_control_options_are_checked_and_travel_plain():
    from qhive.task import chain_link, check_package, new_task

    link = chain_link(("math.floor", (1.5,), {"retry_on": ConnectionError, "countdown": 2,
                                               "priority": 0, "backoff": 3}))
    assert link["options"] == {
        "retry_on": ["builtins.ConnectionError"], "countdown": 2,
        "backoff": {"kind": "fixed", "base": 3, "cap": 3, "jitter": False}}
    check_package(new_task(link["func"], link["args"], **link["options"]))  # a worker takes it
    assert delivery(link["options"]) == {"delay": 2.0}, "counted from when it is sent"
    with pytest.raises(ValueError, match="countdown"):
        chain_link(("math.floor", (), {"countdown": -1}))
