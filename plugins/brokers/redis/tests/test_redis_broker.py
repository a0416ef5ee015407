"""What the Redis broker promises beyond the contract, on real Redis servers.

The shared server (``$QHIVE_TEST_REDIS_*``) is only touched through queues and
keys of the test's own. Tests that stop, freeze or restart a server, or count its
commands, start a ``redis-server`` of their own (``RedisServer``, on a free
port, with an append-only file in the test's folder).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
import qhive_broker_redis.broker
import qhive_testkit.broker
import redis
from qhive.config import Config
from qhive.errors import BrokerConnectionError, BrokerError, ConfigError
from qhive_broker_redis.broker import STATS_INDEX, STATS_VALUE, QueueKeys, RedisBroker
from qhive_broker_redis.scripts import WAKE_TOKEN
from qhive_testkit.services import (
    REDIS_OTHER_DB,
    free_port,
    redis_address,
    redis_options,
    redis_url,
    require,
)

SHARED = redis_url()
#: Generous bounds for things that take milliseconds; they catch hangs, not slowness.
WITHIN = 30.0


def unique(prefix: str = "redis-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make():
    """``make(queue=None, redis=SHARED, **settings) -> RedisBroker``; queues deleted afterwards."""
    require("redis")
    made = []

    def factory(queue=None, *, redis=SHARED, django_redis=None, **settings):
        config = Config.from_dict({"retry": 30, **settings})
        broker = RedisBroker(queue or unique(), config=config, redis=redis,
                             django_redis=django_redis)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        with contextlib.suppress(BrokerConnectionError):  # its own server is gone already
            broker.delete_queue()
        broker.close()


take = functools.partial(qhive_testkit.broker.take, within=WITHIN, count=10)


def finish_within(seconds, func, *args):
    """Run ``func(*args)`` in a thread and return what it returned or raised;
    fail if it is still running after ``seconds`` (a hang, not a slow call)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = func(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{getattr(func, '__name__', func)} still running after {seconds:.0f} s",
                    pytrace=False)
    return outcome


# --------------------------------------------------------------------------- options


def test_defaults_to_127_0_0_1_6379_db_0():
    require("redis")
    broker = RedisBroker(unique())
    assert broker.address == "127.0.0.1:6379/0"
    if broker.address == redis_address():  # not when $QHIVE_TEST_REDIS_* point elsewhere
        assert broker.ping() is True
    broker.close()


@pytest.mark.parametrize("how", ["dict", "url"])
def test_options_select_the_database(make, how):
    other = REDIS_OTHER_DB
    options = redis_options(other) if how == "dict" else redis_url(other)
    broker = make(redis=options)
    assert broker.address == redis_address(other)
    broker.enqueue(b"in the other db")
    selected, first = redis.Redis(**redis_options(other)), redis.Redis(**redis_options())
    try:
        assert selected.llen(broker.keys.waiting) == 1
        assert first.exists(broker.keys.waiting) == 0
    finally:
        selected.close()
        first.close()


def test_django_q2_documented_options_work(make):
    """The ``Q_CLUSTER["redis"]`` of Django Q2's docs, with keys redis-py renamed."""
    broker = make(redis={**redis_options(), "password": None,
                         "socket_timeout": None, "charset": "utf-8", "errors": "strict",
                         "unix_socket_path": None})
    broker.enqueue(b"old settings")
    assert [m.payload for m in take(broker, 1)] == [b"old settings"]


def test_selected_by_the_legacy_key_of_q_cluster():
    from qhive.pipeline import Pipeline

    require("redis")
    config = Config.from_dict({"name": unique(), "redis": redis_options()})
    broker = Pipeline(config).broker
    try:
        assert isinstance(broker, RedisBroker) and broker.queue == config.name
        assert broker.ping()
    finally:
        broker.close()


def test_the_entry_point_names_the_class_and_the_package_imports_nothing():
    from qhive.drivers import load_driver

    assert load_driver("broker", "redis") is RedisBroker
    code = "import sys, qhive_broker_redis; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=WITHIN)
    assert out.stdout.strip() == "False", "importing the package imported redis-py"


@pytest.mark.parametrize(("options", "key", "message"), [
    ({"redis": 6379}, "redis", "dict of redis.Redis options or a URL such as"),
    ({"redis": ["127.0.0.1"]}, "redis", "got list"),
    ({"redis": ""}, "redis", "is not a Redis URL"),
    ({"redis": "http://user:pw@127.0.0.1:6379"}, "redis", r"'http://user:\*\*\*@127"),
    ({"redis": {"hots": "127.0.0.1"}}, "redis.hots", "did you mean 'host'"),
    ({"redis": {"decode_responses": True}}, "redis.decode_responses", "qhive stores bytes"),
    ({"django_redis": 5}, "django_redis", "alias of a cache"),
    ({"django_redis": ""}, "django_redis", "alias of a cache"),
])
def test_bad_options_are_config_errors(options, key, message):
    with pytest.raises(ConfigError, match=message) as caught:
        RedisBroker("q", **options)
    assert caught.value.key == key
    assert "Redis broker" in str(caught.value)


def test_bad_queue_name():
    with pytest.raises(ConfigError, match="non-empty string"):
        RedisBroker("")


# --------------------------------------------------------------------------- django-redis


QH_CACHE = {"qh": {"BACKEND": "django_redis.cache.RedisCache",
                   "LOCATION": SHARED}}


def test_django_redis_alias_uses_that_cache_connection(django_project, make):
    from django.test import override_settings
    from django_redis import get_redis_connection

    with override_settings(CACHES=QH_CACHE):
        # Both keys given: django_redis wins, as in Django Q2 (port 1 would fail).
        broker = make(django_redis="qh", redis={"port": 1})
        assert broker.client() is get_redis_connection("qh")
        broker.enqueue(b"through django-redis")
        assert get_redis_connection("qh").llen(broker.keys.waiting) == 1
        assert "django-redis cache 'qh'" in broker.address
        assert [m.payload for m in take(broker, 1)] == [b"through django-redis"]
        # A pickled copy finds the connection again by its alias.
        import pickle

        copy = pickle.loads(pickle.dumps(broker))
        assert copy.client() is get_redis_connection("qh")
        broker.close()  # lets go of the shared connection; the cache keeps working
        assert get_redis_connection("qh").ping()
        assert broker.queue_size() == 0


def test_django_redis_alias_must_be_a_django_redis_cache(django_project):
    from django.test import override_settings

    caches = {**QH_CACHE,
              "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(CACHES=caches):
        with pytest.raises(ConfigError, match=r"not in settings\.CACHES") as caught:
            RedisBroker("q", django_redis="nope")
        assert caught.value.key == "django_redis"
        with pytest.raises(ConfigError, match="not a django-redis cache"):
            RedisBroker("q", django_redis="local")


# --------------------------------------------------------------------------- receipts

CONSUMER = textwrap.dedent("""
    import sys, time
    from qhive.config import Config
    from qhive_broker_redis.broker import RedisBroker

    broker = RedisBroker(sys.argv[1], config=Config.from_dict({"retry": 1}), redis=sys.argv[2])
    got = broker.dequeue(count=int(sys.argv[3]), timeout=30)
    print(",".join(m.payload.decode() for m in got), flush=True)
    time.sleep(600)  # "working" until killed
""")


def test_messages_of_a_consumer_killed_with_sigkill_come_back(make):
    broker = make()
    payloads = [f"task {i}".encode() for i in range(5)]
    broker.enqueue_many(payloads)
    child = subprocess.Popen([sys.executable, "-c", CONSUMER, broker.queue, SHARED, "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        taken = child.stdout.readline().strip()
    finally:
        child.send_signal(signal.SIGKILL)  # the process this test started
        _, errors = child.communicate(timeout=WITHIN)
    assert taken == "task 0,task 1,task 2", f"the consumer failed: {errors}"
    assert broker.lock_size() == 3

    other = make(broker.queue)  # another cluster on the same queue
    got = take(other, 5)
    by_payload = {m.payload: m.deliveries for m in got}
    assert sorted(by_payload) == payloads, "messages were lost or duplicated"
    assert len(got) == 5
    assert [by_payload[p] for p in payloads] == [2, 2, 2, 1, 1]
    other.acknowledge_many(m.ack_id for m in got)
    assert other.queue_size() == 0 and other.lock_size() == 0


def test_redelivered_messages_keep_their_place(make):
    broker = make(retry=1)
    payloads = [f"{i}".encode() for i in range(6)]
    broker.enqueue_many(payloads)
    first = broker.dequeue(count=4)
    assert [m.payload for m in first] == payloads[:4]
    broker.acknowledge(first[1].ack_id)
    time.sleep(1.5)  # receipts of 0, 2 and 3 run out
    again = broker.dequeue(count=10)
    assert [m.payload for m in again] == [b"0", b"2", b"3", b"4", b"5"]
    assert [m.deliveries for m in again] == [2, 2, 2, 1, 1]
    assert [m.ack_id for m in again[:3]] == [first[0].ack_id, first[2].ack_id,
                                             first[3].ack_id]


def test_a_waiting_dequeue_recovers_expired_receipts(make):
    """Nothing is enqueued: the blocking wait itself must come back to look."""
    broker = make(retry=1)
    broker.enqueue(b"abandoned")
    assert [m.payload for m in broker.dequeue()] == [b"abandoned"]
    got = broker.dequeue(timeout=WITHIN)
    assert [(m.payload, m.deliveries) for m in got] == [(b"abandoned", 2)]


def test_release_puts_messages_back_first_in_order(make):
    broker = make(retry=600)
    broker.enqueue_many([b"a", b"b", b"c", b"d"])
    taken = broker.dequeue(count=3)
    for message in taken:  # a stopping cluster gives them back oldest first
        broker.release(message.ack_id)
    assert broker.lock_size() == 0 and broker.queue_size() == 4
    got = broker.dequeue(count=4)
    assert [m.payload for m in got] == [b"a", b"b", b"c", b"d"]
    assert [m.deliveries for m in got] == [2, 2, 2, 1]
    broker.acknowledge(got[0].ack_id)
    broker.release(got[0].ack_id)  # acknowledged: stays gone
    broker.release("0000000000000099-00000000")  # never there: harmless
    assert broker.queue_size() == 0 and broker.lock_size() == 3


def test_released_message_goes_before_younger_waiting_ones(make):
    broker = make(retry=600)
    broker.enqueue(b"old")
    [old] = broker.dequeue()
    broker.enqueue_many([b"young 1", b"young 2"])
    broker.release(old.ack_id)
    assert [m.payload for m in broker.dequeue(count=3)] == [b"old", b"young 1", b"young 2"]


def test_deliveries_count_every_hand_out(make):
    broker = make(retry=1)
    broker.enqueue(b"again and again")
    seen = []
    for _ in range(3):
        [message] = broker.dequeue()
        seen.append(message.deliveries)
        broker.release(message.ack_id)
    [message] = broker.dequeue()
    seen.append(message.deliveries)
    time.sleep(1.5)
    [message] = broker.dequeue()
    seen.append(message.deliveries)
    assert seen == [1, 2, 3, 4, 5]
    broker.acknowledge(message.ack_id)
    assert broker.dequeue(timeout=0.5) == []


def test_acknowledging_a_message_whose_receipt_ran_out_removes_it(make):
    """A slow consumer acknowledges after ``retry``: the message, waiting again,
    must not be handed out once more."""
    broker = make(retry=1)
    broker.enqueue_many([b"slow", b"next"])
    [slow] = broker.dequeue()
    time.sleep(1.5)
    broker.acknowledge(slow.ack_id)
    assert [m.payload for m in broker.dequeue(count=5)] == [b"next"]
    assert broker.queue_size() == 0


def test_an_acknowledgement_redis_refuses_raises_instead_of_passing_silently(make):
    """The MULTI block queues every command; one that fails only when EXEC runs it
    (a key of the wrong type) must still raise, as redis-py's pipeline did."""
    broker = make()
    broker.enqueue(b"x")
    [message] = broker.dequeue()
    raw = broker.client()
    raw.delete(broker.keys.deliveries)
    raw.set(broker.keys.deliveries, "not a hash")
    with pytest.raises(BrokerError, match="WRONGTYPE"):
        broker.acknowledge(message.ack_id)


def test_delete_removes_a_waiting_message(make):
    broker = make()
    first, _ = broker.enqueue_many([b"first", b"second"])
    broker.delete(first)
    assert broker.queue_size() == 1
    assert [m.payload for m in broker.dequeue(count=5)] == [b"second"]


def test_ids_follow_enqueue_order_and_differ_after_delete_queue(make):
    broker = make()
    ids = [broker.enqueue(b"x"), *broker.enqueue_many([b"y", b"z"])]
    assert ids == sorted(ids) and len(set(ids)) == 3
    broker.delete_queue()
    again = broker.enqueue(b"x")
    assert again not in ids, "an id taken before delete_queue() names a new message"
    client = broker.client()
    broker.delete_queue()
    assert not any(client.exists(key) for key in (*broker.keys.messages, broker.keys.seq))


def test_keys_share_the_queue_hash_tag():
    keys = QueueKeys.of("my:queue")
    assert keys.waiting == "qhive:{my:queue}:waiting"
    assert {k.split("}")[0] for k in (*keys.messages, keys.seq)} == {"qhive:{my:queue"}


def test_a_new_message_wakes_every_blocked_blmove():
    """The wake-up relies on this: ``BLMOVE l l LEFT LEFT`` returns to every client
    blocked on ``l`` when one element arrives, and leaves the list as it was."""
    require("redis")
    key = unique("qhive-test-blmove")
    client = redis.Redis(**redis_options())
    woken = []

    def wait():
        own = redis.Redis(**redis_options(), socket_timeout=WITHIN + 10)
        try:
            woken.append(own.blmove(key, key, WITHIN, "LEFT", "LEFT"))
        finally:
            own.close()

    threads = [threading.Thread(target=wait, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WITHIN
    while int(client.info("clients")["blocked_clients"]) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        client.rpush(key, b"one")
        for thread in threads:
            thread.join(WITHIN + 10)
        assert woken == [b"one"] * 4
        assert client.lrange(key, 0, -1) == [b"one"]
    finally:
        client.delete(key)
        client.close()


def test_blocked_consumers_all_get_work(make):
    queue = unique()
    consumers = [make(queue) for _ in range(3)]
    results = {}

    def consume(index, broker):
        results[index] = broker.dequeue(timeout=WITHIN)

    threads = [threading.Thread(target=consume, args=(i, b), daemon=True)
               for i, b in enumerate(consumers)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    make(queue).enqueue_many([b"1", b"2", b"3"])
    for thread in threads:
        thread.join(WITHIN + 10)
    got = sorted(m.payload for messages in results.values() for m in messages)
    assert got == [b"1", b"2", b"3"] and all(len(m) == 1 for m in results.values())


# --------------------------------------------------------------------------- delays, priorities

TOKEN = WAKE_TOKEN.encode()


def waiting_list(broker):
    return broker.client().lrange(broker.keys.waiting, 0, -1)


@pytest.fixture
def long_waits(monkeypatch):
    """Blocking waits of up to a minute (instead of a second): a consumer then comes
    back early only if something ends its wait — what these tests are about."""
    monkeypatch.setattr(qhive_broker_redis.broker, "MAX_BLOCK", 60.0)


def blocked_dequeue(broker, timeout=60.0):
    """Start ``broker.dequeue(timeout=…)`` in a thread; return the thread and its outcome
    once the server counts the consumer as blocked."""
    outcome = {}

    def run():
        try:
            outcome["value"] = broker.dequeue(timeout=timeout)
        except BaseException as exc:
            outcome["error"] = exc

    raw = redis.Redis(**redis_options())
    try:
        before = int(raw.info("clients")["blocked_clients"])
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + WITHIN
        while (int(raw.info("clients")["blocked_clients"]) <= before
               and time.monotonic() < deadline and thread.is_alive()):
            time.sleep(0.01)
    finally:
        raw.close()
    return thread, outcome


def joined(thread, outcome, what):
    thread.join(WITHIN)
    if thread.is_alive():
        pytest.fail(f"a consumer blocked in dequeue() was not woken by {what}", pytrace=False)
    assert "error" not in outcome, outcome
    return outcome["value"]


def test_the_plain_path_touches_no_key_of_priorities_or_delays(make):
    broker = make()
    broker.enqueue(b"one")
    broker.enqueue_many([b"two", b"three"])
    got = broker.dequeue(count=5)
    broker.release(got[0].ack_id)
    broker.acknowledge_many(m.ack_id for m in [*got[1:], *broker.dequeue(count=5)])
    client = broker.client()
    assert client.exists(broker.keys.prioritized, broker.keys.delayed) == 0
    assert broker.queue_size() == 0 and broker.lock_size() == 0


def test_a_prioritized_message_wakes_a_consumer_blocked_on_an_empty_queue(make, long_waits):
    queue = unique()
    consumer = make(queue, redis={**redis_options(), "socket_timeout": None})
    thread, outcome = blocked_dequeue(consumer)
    make(queue).enqueue(b"urgent", priority=7)
    got = joined(thread, outcome, "a prioritized enqueue")
    assert [m.payload for m in got] == [b"urgent"]
    assert consumer.dequeue() == [] and waiting_list(consumer) == []


def test_a_short_delay_wakes_a_blocked_consumer_to_wait_for_it(make, long_waits):
    queue = unique()
    consumer = make(queue, redis={**redis_options(), "socket_timeout": None})
    thread, outcome = blocked_dequeue(consumer)
    make(queue).enqueue(b"soon", delay=0.3, priority=-4)
    got = joined(thread, outcome, "a message delayed by less than a second")
    assert [m.payload for m in got] == [b"soon"]


def test_a_blocked_consumer_waits_no_longer_than_until_something_falls_due(make, long_waits):
    """The claim that took nothing says when the next delayed message or receipt is
    due: the wait ends then, not after MAX_BLOCK."""
    queue = unique()
    consumer = make(queue, redis={**redis_options(), "socket_timeout": None}, retry=1)
    consumer.enqueue(b"later", delay=1.5, priority=2)
    got = joined(*blocked_dequeue(consumer), "a delayed message falling due")
    assert [(m.payload, m.deliveries) for m in got] == [(b"later", 1)]
    # never acknowledged: its receipt (retry=1) ends the next wait
    again = joined(*blocked_dequeue(consumer), "a receipt running out")
    assert [(m.payload, m.deliveries) for m in again] == [(b"later", 2)]


def test_wake_tokens_never_pile_up_and_are_never_delivered(make):
    broker = make()
    for n in range(50):
        broker.enqueue(f"p{n}".encode(), priority=1 + n % 3)
        broker.enqueue(f"d{n}".encode(), delay=0.001)  # short: wakes like a priority
        listed = waiting_list(broker)
        assert listed.count(TOKEN) <= 1 and TOKEN not in listed[1:], listed
        if n % 2:
            got = broker.dequeue(count=1 + n % 4)
            assert got and all(m.payload[:1] in (b"p", b"d") for m in got), got
            broker.acknowledge_many(m.ack_id for m in got)
    rest = take(broker, 200)
    assert all(m.payload[:1] in (b"p", b"d") for m in rest)
    broker.acknowledge_many(m.ack_id for m in rest)
    assert broker.dequeue() == []
    assert waiting_list(broker) == [], "an empty claim leaves no token behind"
    assert broker.queue_size() == 0 and broker.lock_size() == 0


def test_a_claim_behind_a_wake_token_still_fills_its_batch(make):
    broker = make()
    broker.enqueue(b"urgent", priority=3)  # the list was empty: a token went onto it
    broker.enqueue_many([b"a", b"b"])
    assert waiting_list(broker)[0] == TOKEN
    assert broker.queue_size() == 3, "the token is no message"
    got = broker.dequeue(count=3)
    assert [m.payload for m in got] == [b"urgent", b"a", b"b"]
    assert waiting_list(broker) == []


def test_queue_size_counts_what_can_be_taken_now(make):
    broker = make()
    broker.enqueue(b"high", priority=2)
    broker.enqueue(b"low", priority=-2)
    broker.enqueue(b"plain")
    broker.enqueue(b"later", delay=600)
    broker.enqueue(b"later, high", delay=600, priority=9)
    assert broker.queue_size() == 3 and broker.lock_size() == 0
    [taken] = broker.dequeue()
    assert taken.payload == b"high" and broker.queue_size() == 2
    broker.release(taken.ack_id, delay=600)
    assert broker.queue_size() == 2 and broker.lock_size() == 0


def test_delayed_and_prioritized_messages_come_out_by_priority_once_due(make):
    broker = make()
    broker.enqueue(b"late low", delay=0.5, priority=-2)
    broker.enqueue(b"late high", delay=0.5, priority=7)
    broker.enqueue(b"late plain", delay=0.5)
    broker.enqueue(b"now")
    assert [m.payload for m in broker.dequeue(count=10)] == [b"now"]
    time.sleep(0.7)
    broker.enqueue(b"plain after", priority=0)
    got = [m.payload for m in broker.dequeue(count=10)]
    # due, "late plain" is back in its place: before the plain one enqueued after it
    assert got == [b"late high", b"late plain", b"plain after", b"late low"]


def test_a_message_released_with_a_delay_keeps_its_priority_and_its_place(make):
    broker = make()
    broker.enqueue_many([b"plain 1"])
    broker.enqueue(b"high", priority=4)
    [high] = broker.dequeue()
    broker.release(high.ack_id, delay=0.3)
    broker.enqueue(b"high, younger", priority=4)
    time.sleep(0.5)
    got = broker.dequeue(count=10)
    assert [(m.payload, m.deliveries) for m in got] == [
        (b"high", 2), (b"high, younger", 1), (b"plain 1", 1)]


def test_release_without_a_delay_puts_a_prioritized_message_back_at_once(make):
    broker = make()
    broker.enqueue(b"high", priority=1)
    [high] = broker.dequeue()
    broker.enqueue(b"plain")
    broker.release(high.ack_id)
    assert [m.payload for m in broker.dequeue(count=2)] == [b"high", b"plain"]


def test_delete_removes_prioritized_and_delayed_messages(make):
    broker = make()
    high = broker.enqueue(b"high", priority=5)
    later = broker.enqueue(b"later", delay=0.2)
    broker.enqueue(b"kept")
    broker.delete(high)
    broker.delete(later)
    time.sleep(0.3)
    assert [m.payload for m in broker.dequeue(count=5)] == [b"kept"]
    client = broker.client()
    assert client.exists(broker.keys.prioritized, broker.keys.delayed) == 0


def test_acknowledged_ids_left_in_priorities_or_delays_are_dropped(make):
    """An acknowledgement touches only the keys it touched before priorities; an id
    still waiting somewhere (receipt ran out, released) is dropped by the claim."""
    broker = make(retry=1)
    broker.enqueue(b"high", priority=3)
    broker.enqueue(b"retried", priority=-1)
    high, retried = broker.dequeue(count=2)
    broker.release(retried.ack_id, delay=0.2)
    broker.acknowledge(retried.ack_id)  # a stale acknowledgement
    time.sleep(1.2)  # the receipt of "high" runs out
    broker.acknowledge(high.ack_id)  # late
    assert broker.dequeue(count=5) == []
    client = broker.client()
    assert client.exists(broker.keys.prioritized, broker.keys.delayed,
                         broker.keys.payloads, broker.keys.deliveries) == 0


def test_purge_and_delete_queue_remove_every_key(make):
    broker = make()
    broker.enqueue_many([b"a", b"b"])
    broker.enqueue(b"high", priority=3)
    broker.enqueue(b"low", priority=-3)
    broker.enqueue(b"later", delay=600, priority=-3)
    broker.dequeue()
    client = broker.client()
    assert client.exists(*broker.keys.messages) == len(broker.keys.messages)
    broker.purge_queue()
    assert client.exists(*broker.keys.messages) == 0 and client.exists(broker.keys.seq)
    broker.enqueue(b"later", delay=600)
    broker.delete_queue()
    assert client.exists(*broker.keys.messages, broker.keys.seq) == 0


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"delay": -1}, ValueError, ">= 0"),
    ({"delay": float("nan")}, ValueError, "finite"),
    ({"delay": float("inf")}, ValueError, "finite"),
    ({"delay": "5"}, TypeError, "number of seconds"),
    ({"delay": None}, TypeError, "number of seconds"),
    ({"delay": True}, TypeError, "number of seconds"),
    ({"priority": 11}, ValueError, "from -10 to 10"),
    ({"priority": -11}, ValueError, "from -10 to 10"),
    ({"priority": 1.5}, TypeError, "an int"),
    ({"priority": "3"}, TypeError, "an int"),
    ({"priority": True}, TypeError, "an int"),
])
def test_bad_delays_and_priorities_are_refused(make, options, error, message):
    broker = make()
    with pytest.raises(error, match=message) as caught:
        broker.enqueue(b"x", **options)
    assert "Redis broker" in str(caught.value)
    if "delay" in options:
        with pytest.raises(error, match=message):
            broker.release("0000000000000001-00000000", delay=options["delay"])
    assert broker.client().exists(*broker.keys.messages, broker.keys.seq) == 0


def test_kill_9_of_a_consumer_of_prioritized_and_delayed_messages_loses_nothing(make):
    broker = make()
    priorities = [0, 5, -5, 2, 0, 10, -10, 1]
    sent = {}
    for n in range(40):
        payload, priority = f"m{n}".encode(), priorities[n % len(priorities)]
        delay = 0.5 if n % 5 == 0 else 0.0
        broker.enqueue(payload, priority=priority, delay=delay)
        sent[payload] = (priority, delay)
    child = subprocess.Popen([sys.executable, "-c", CONSUMER, broker.queue, SHARED, "4"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        taken = child.stdout.readline().strip()
    finally:
        child.send_signal(signal.SIGKILL)  # the process this test started
        _, errors = child.communicate(timeout=WITHIN)
    undelayed = [p for p in sent if not sent[p][1]]
    expected = sorted(undelayed, key=lambda p: -sent[p][0])[:4]  # a stable sort
    assert taken == ",".join(p.decode() for p in expected), f"the consumer failed: {errors}"

    other = make(broker.queue)  # another cluster on the same queue
    got = []
    for message in take(other, len(sent)):
        got.append(message)
        other.acknowledge(message.ack_id)
    payloads = [m.payload for m in got]
    lost, twice = len(set(sent) - set(payloads)), len(payloads) - len(set(payloads))
    print(f"{len(sent)} enqueued, {len(set(payloads))} taken, {lost} lost, {twice} twice")
    assert (lost, twice) == (0, 0)
    deliveries = {m.payload: m.deliveries for m in got}
    assert {p for p, d in deliveries.items() if d == 2} == set(expected)
    assert other.dequeue(timeout=0.5) == [] and waiting_list(other) == []
    assert other.queue_size() == 0 and other.lock_size() == 0


def test_delayed_and_prioritized_messages_survive_a_server_restart(redis_server, make):
    broker = make(redis=redis_server.url)
    broker.enqueue(b"later", delay=1.0, priority=-1)
    broker.enqueue(b"high", priority=6)
    broker.enqueue(b"plain")
    redis_server.stop()  # SIGTERM to the server this test started
    redis_server.start()  # the append-only file is read again
    got = take(broker, 3)
    assert [m.payload for m in got] == [b"high", b"plain", b"later"]


# --------------------------------------------------------------------------- statistics


def test_get_stats_never_scans_the_keyspace(redis_server):
    broker = RedisBroker("q", redis=redis_server.url)
    raw = redis.Redis(port=redis_server.port)
    try:
        # Keys that look like stats of the same project but were never set_stat'ed.
        with raw.pipeline(transaction=False) as pipe:
            for n in range(2000):
                pipe.set(f"qhive:proj:cluster:fake{n}", b"fake")
                pipe.set(f"{STATS_VALUE}qhive:proj:cluster:orphan{n}", b"orphan")
            pipe.execute()
        broker.set_stat("qhive:proj:cluster:a", b"A", 60)
        broker.set_stat("qhive:proj:cluster:b", b"B", 60)
        broker.set_stat("qhive:other:cluster:c", b"C", 60)
        raw.config_resetstat()
        assert sorted(broker.get_stats("qhive:proj:cluster:")) == [b"A", b"B"]
        used = raw.info("commandstats")
        scans = {c for c in used if c.split("|")[0] in ("cmdstat_keys", "cmdstat_scan")}
        assert not scans, f"get_stats() ran {scans}"
    finally:
        raw.close()
        broker.close()


def test_expired_stats_leave_the_index(make):
    broker = make()
    prefix = unique("redis-stat") + ":"
    for n in range(20):
        broker.set_stat(f"{prefix}{n}", b"short", 0.2)
    time.sleep(0.5)
    broker.set_stat(prefix + "kept", b"kept", 60)
    client = broker.client()
    members = [m for m in client.zrange(STATS_INDEX, 0, -1) if m.startswith(prefix.encode())]
    assert members == [(prefix + "kept").encode()]
    assert broker.get_stats(prefix) == [b"kept"]
    client.delete(STATS_VALUE + prefix + "kept")
    client.zrem(STATS_INDEX, prefix + "kept")


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("operation", ["ping", "enqueue", "dequeue", "queue_size", "get_stats"])
def test_an_unreachable_server_is_a_broker_connection_error(operation):
    port = free_port()  # nothing listens there
    broker = RedisBroker("q", redis=f"redis://:s3cret@127.0.0.1:{port}/2",
                         config=Config.from_dict({"retry": 30}))
    call = {"ping": broker.ping, "enqueue": lambda: broker.enqueue(b"x"),
            "dequeue": lambda: broker.dequeue(timeout=5), "queue_size": broker.queue_size,
            "get_stats": lambda: broker.get_stats("x")}[operation]
    outcome = finish_within(WITHIN, call)
    error = outcome.get("error")
    assert isinstance(error, BrokerConnectionError), f"{operation}() gave {outcome}"
    text = str(error)
    assert f"127.0.0.1:{port}/2" in text and "redis-server" in text and "Redis broker" in text
    assert "s3cret" not in text, "the password is in the error message"


def test_a_frozen_server_gives_an_error_not_a_hang(redis_server, make):
    broker = make(redis={"port": redis_server.port, "socket_timeout": 1.0})
    broker.enqueue(b"before")
    assert [m.payload for m in broker.dequeue()] == [b"before"]
    os.kill(redis_server.process.pid, signal.SIGSTOP)  # our own server
    try:
        outcome = finish_within(WITHIN, broker.dequeue, 1, 5.0)
        assert isinstance(outcome.get("error"), BrokerConnectionError), outcome
        assert "did not answer" in str(outcome["error"])
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    broker.enqueue(b"after")
    assert [m.payload for m in take(broker, 1)] == [b"after"]


def test_the_same_broker_works_again_after_a_server_restart(redis_server, make):
    broker = make(redis=redis_server.url, retry=2)
    payloads = [f"kept {i}".encode() for i in range(5)]
    broker.enqueue_many(payloads)
    [in_flight] = broker.dequeue()
    broker.set_stat("qhive:restart:cluster:x", b"stat", 600)
    redis_server.stop()  # SIGTERM to the server this test started

    for call in (broker.ping, lambda: broker.enqueue(b"lost"),
                 lambda: broker.dequeue(timeout=2), broker.lock_size):
        outcome = finish_within(WITHIN, call)
        assert isinstance(outcome.get("error"), BrokerConnectionError), outcome
        assert f"127.0.0.1:{redis_server.port}/0" in str(outcome["error"])

    redis_server.start()  # same port, same folder: the append-only file is read again
    assert broker.ping()
    assert broker.queue_size() == 4 and broker.lock_size() == 1
    assert broker.get_stat("qhive:restart:cluster:x") == b"stat"
    got = take(broker, 5)  # the one in flight comes back after retry
    assert sorted(m.payload for m in got) == payloads
    assert {m.payload: m.deliveries for m in got}[in_flight.payload] == 2
    broker.acknowledge_many(m.ack_id for m in got)
    broker.enqueue(b"new")
    assert [m.payload for m in take(broker, 1)] == [b"new"]
    assert broker.lock_size() == 1
