"""``RedisResultStore.wait`` (``result(wait=…)``): woken by the save script's
announcement instead of polling — proved by counting the looks — with the deadline
honoured, group counts, and a pub/sub connection lost while waiting."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from typing import Any

import pytest
from qhive.contracts import TaskResult
from qhive_store_redis.store import RedisResultStore
from qhive_testkit.result_store import ReadCounter
from qhive_testkit.services import redis_url
from redis.backoff import NoBackoff
from redis.retry import Retry

URL = redis_url()
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
#: Seconds after the start of a wait that the awaited result is saved.
LATER = 1.0


def make_result(**fields: Any) -> TaskResult:
    defaults = {"id": uuid.uuid4().hex, "name": f"waittest-{uuid.uuid4().hex[:8]}",
                "func": "math.floor", "started": NOW, "stopped": NOW, "success": True,
                "result": 42}
    return TaskResult(**{**defaults, **fields})


@pytest.fixture
def store(make_config):
    made = RedisResultStore(config=make_config(), redis=URL)
    yield made
    made.close()


@pytest.fixture
def other(store):
    """Another store on the same results (a cluster saving them)."""
    made = RedisResultStore(config=store.config, redis=URL)
    yield made
    made.close()


def in_thread(wait) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []
    waiter = threading.Thread(target=lambda: answers.append(wait()), daemon=True)
    waiter.start()
    return waiter, answers


def test_a_waiter_is_woken_by_the_save_and_does_not_poll(store, other, monkeypatch):
    result, unrelated = make_result(), make_result()
    looks = ReadCounter(store, monkeypatch)
    threading.Timer(LATER / 2, lambda: other.save(unrelated)).start()  # wakes nobody
    threading.Timer(LATER, lambda: other.save(result)).start()
    found = store.wait(lambda: store.get(result.id), time.monotonic() + 30, task_id=result.id)
    assert found == result
    # Polling (5 ms doubling to 250 ms) would have looked about 9 times in a second.
    assert looks.count == 2, "one look once subscribed, one after the save"


def test_a_save_in_another_process_wakes_the_waiter(store):
    result = make_result()
    code = textwrap.dedent(f"""
        import datetime as dt, time
        from qhive.config import Config
        from qhive.contracts import TaskResult
        from qhive_store_redis.store import RedisResultStore
        config = Config.from_dict({{"name": {store.config.name!r}}},
                                  secret_key={store.config.secret_key!r})
        time.sleep({LATER})
        now = dt.datetime.now(dt.UTC)
        RedisResultStore(config=config, redis={URL!r}).save(TaskResult(
            id={result.id!r}, name="by-another-process", func="f", started=now,
            stopped=now, success=True, result="from afar"))
    """)
    saver = subprocess.Popen([sys.executable, "-c", code])
    try:
        found = store.wait(lambda: store.get(result.id), time.monotonic() + 30,
                           task_id=result.id)
    finally:
        assert saver.wait(timeout=30) == 0
    assert found is not None and found.result == "from afar"


def test_the_deadline_is_honoured(store, monkeypatch):
    looks = ReadCounter(store, monkeypatch)
    missing = uuid.uuid4().hex
    deadline = time.monotonic() + LATER / 2
    assert store.wait(lambda: store.get(missing), deadline, task_id=missing) is None
    assert time.monotonic() >= deadline
    assert looks.count == 1, "no look while sleeping: the deadline ends the wait"


def test_a_past_deadline_looks_once_and_subscribes_not(store, monkeypatch, raw_redis):
    looks = ReadCounter(store, monkeypatch)
    missing = uuid.uuid4().hex
    assert store.wait(lambda: store.get(missing), time.monotonic(), task_id=missing) is None
    assert looks.count == 1 and store._subscribers == []


def test_waiting_for_a_group_count_looks_once_per_batch_of_the_group(store, other, monkeypatch):
    group = f"waittest-{uuid.uuid4().hex[:8]}"
    looks = ReadCounter(store, monkeypatch)

    def save_in_batches():
        other.save_many([make_result(group=group), make_result(group=group)])
        time.sleep(0.2)
        other.save_many([make_result() for _ in range(3)])  # not this group: no look
        time.sleep(0.2)
        other.save(make_result(group=group))

    threading.Timer(LATER, save_in_batches).start()
    found = store.wait(lambda: store.count_group(group) >= 3 or None, time.monotonic() + 30,
                       group=group)
    assert found is True
    assert looks.count == 3, "one look before sleeping, one per batch of the group"


def test_waiting_by_name(store, other):
    result = make_result()
    threading.Timer(LATER / 2, lambda: other.save(result)).start()
    found = store.wait(lambda: store.get_by_name(result.name), time.monotonic() + 30,
                       name=result.name)
    assert found == result


def test_the_save_announces_what_it_wrote_and_only_while_someone_listens(store, raw_redis):
    channel = f"{store.prefix}saved"
    group = f"waittest-{uuid.uuid4().hex[:8]}"
    first, second = make_result(group=group), make_result()
    listener = raw_redis.pubsub()
    listener.subscribe(channel)
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    store.save_many([first, second, first])  # the second save of a success writes nothing
    message = listener.get_message(timeout=5)
    assert message["type"] == "message"
    assert json.loads(message["data"]) == [
        f"result:{first.id}", f"group:{group}", f"name:{first.name}",
        f"result:{second.id}", f"name:{second.name}"]
    assert listener.get_message(timeout=0.2) is None, "one announcement per batch"
    listener.close()
    assert raw_redis.pubsub_numsub(channel) == [(channel.encode(), 0)]


def test_a_waiter_unsubscribes_and_keeps_its_connection_for_the_next(store, other, raw_redis):
    channel = f"{store.prefix}saved".encode()
    for _ in range(3):
        result = make_result()
        threading.Timer(0.2, lambda r=result: other.save(r)).start()
        assert store.wait(lambda r=result: store.get(r.id), time.monotonic() + 30,
                          task_id=result.id) == result
        assert raw_redis.pubsub_numsub(channel) == [(channel, 0)], "nobody waits: unsubscribed"
        assert len(store._subscribers) == 1, "the connection is kept for the next waiter"


def waiting_in_thread(store, result, monkeypatch, *, reconnects: bool):
    """A waiter for ``result`` on a thread, its subscriber once it sleeps (redis-py
    connecting again by itself after an error, or not) and what it returns."""
    subscribers = []
    subscribed = threading.Event()
    original = store._subscribed

    def recording():
        subscriber = original()
        if not reconnects:
            subscriber.pubsub.connection.retry = Retry(NoBackoff(), 0)
        subscribers.append(subscriber)
        subscribed.set()
        return subscriber

    monkeypatch.setattr(store, "_subscribed", recording)
    waiter, answers = in_thread(lambda: store.wait(lambda: store.get(result.id),
                                                   time.monotonic() + 30, task_id=result.id))
    assert subscribed.wait(10)
    time.sleep(0.2)  # the waiter sleeps on its connection
    return waiter, answers, subscribers


def kill(raw_redis, subscriber) -> None:
    host, port = subscriber.pubsub.connection._sock.getsockname()[:2]
    assert raw_redis.client_kill(f"{host}:{port}")


@pytest.mark.parametrize("reconnects", [True, False], ids=["redis-py-reconnects", "it-does-not"])
def test_a_lost_pubsub_connection_is_noticed_and_the_result_still_found(
        store, other, raw_redis, monkeypatch, caplog, reconnects):
    result = make_result()
    looks = ReadCounter(store, monkeypatch)
    waiter, answers, subscribers = waiting_in_thread(store, result, monkeypatch,
                                                     reconnects=reconnects)
    kill(raw_redis, subscribers[0])
    time.sleep(0.5)  # the waiter notices and subscribes again
    other.save(result)
    waiter.join(30)
    assert answers == [result]
    assert looks.count == 3, "one more look once subscribed again: saves may have been missed"
    # redis-py subscribes again on the same connection; if it does not, the store does
    assert len(subscribers) == (1 if reconnects else 2)
    assert ("broke" in caplog.text) is not reconnects


def test_a_result_saved_while_the_waiter_was_not_subscribed_is_found(
        store, other, raw_redis, monkeypatch):
    result = make_result()
    waiter, answers, subscribers = waiting_in_thread(store, result, monkeypatch,
                                                     reconnects=False)
    subscribe_again = store._subscribed

    def save_first():  # the save lands while nobody listens: only a look finds it
        other.save(result)
        return subscribe_again()

    monkeypatch.setattr(store, "_subscribed", save_first)
    kill(raw_redis, subscribers[0])
    waiter.join(30)
    assert answers == [result]
