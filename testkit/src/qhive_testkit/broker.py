"""``BrokerContract``: what every qhive broker must do.

Subclass it in a test module and supply one fixture, ``make_broker``: a callable
``(queue: str, config: qhive.config.Config) -> Broker``::

    class TestMyBroker(BrokerContract):
        @pytest.fixture
        def make_broker(self, my_server_url):
            return lambda queue, config: MyBroker(queue, config=config, url=my_server_url)

The suite makes its own queue names (unique per test) and configs, and deletes
its queues afterwards. Tests of a capability the broker does not declare in
``capabilities`` are skipped, naming the capability.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import queue as queue_module
import threading
import time
import traceback
from collections.abc import Callable

import pytest
from qhive.contracts import PRIORITY_MAX, PRIORITY_MIN, Broker, Capabilities, Message

from qhive_testkit._util import (
    ALL_BYTES,
    BINARY,
    MARGIN,
    ONE_MIB,
    assert_same_bytes,
    cleanup,
    make_config,
    pickled_copy,
    skip_unless,
    unique,
)

#: The config every broker gets unless a test needs another: a long ``retry`` so
#: nothing is redelivered behind a test's back.
SETTINGS = {"retry": 30, "poll": 0.05, "bulk": 10}
#: The ``retry`` of the tests that wait for a redelivery.
SHORT_RETRY = 1
#: How long a test that expects nothing watches the queue after ``retry`` has passed.
QUIET = 2.0
#: Messages the two concurrent consumers share out.
CONCURRENT_MESSAGES = 200
#: The delay of the delay tests (seconds).
DELAY = 2.0
#: How much earlier than its delay a message may be taken: the broker's clock and
#: this process's are not the same clock.
CLOCK_SLACK = 0.05
#: Upper bound for anything a child process does (spawning included).
CHILD_TIMEOUT = 120.0

BrokerFactory = Callable[..., Broker]


# --------------------------------------------------------------------------- helpers


def take(broker: Broker, n: int, *, within: float, count: int = 1) -> list[Message]:
    """Dequeue until ``n`` messages came or ``within`` seconds passed."""
    got: list[Message] = []
    deadline = time.monotonic() + within
    while len(got) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        got.extend(broker.dequeue(count=min(count, n - len(got)), timeout=min(remaining, 1.0)))
    return got


def take_one(broker: Broker, *, within: float, what: str = "a waiting message") -> Message:
    got = take(broker, 1, within=within)
    if not got:
        pytest.fail(f"{what} was not dequeued within {within:.0f} s", pytrace=False)
    assert isinstance(got[0], Message), f"dequeue() must return Message objects, got {got[0]!r}"
    return got[0]


def watch(broker: Broker, seconds: float) -> list[Message]:
    """Everything dequeued during ``seconds`` (acknowledged at once)."""
    seen: list[Message] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        for message in broker.dequeue(timeout=min(remaining, 0.5)):
            seen.append(message)
            broker.acknowledge(message.ack_id)
    return seen


def in_flight(broker: Broker) -> int | None:
    return broker.lock_size() if broker.capabilities.receipts else None


def _spawn():
    return multiprocessing.get_context("spawn")


def _child_enqueue(broker: Broker, payload: bytes, errors) -> None:
    """Runs in a spawned child: use the unpickled broker."""
    try:
        broker.enqueue(payload)
        broker.close()
    except BaseException:
        errors.put(traceback.format_exc())
        raise SystemExit(1) from None


def _child_consume(broker: Broker, barrier, results) -> None:
    """Runs in a spawned child: drain the queue, acknowledging everything taken."""
    try:
        received: list[bytes] = []
        # If the other consumer died, drain alone: the parent reports it.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=CHILD_TIMEOUT)
        deadline = time.monotonic() + CHILD_TIMEOUT
        empty_looks = 0
        while empty_looks < 3 and time.monotonic() < deadline:
            messages = broker.dequeue(count=10, timeout=0.5)
            empty_looks = 0 if messages else empty_looks + 1
            for message in messages:
                received.append(message.payload)
                broker.acknowledge(message.ack_id)
        broker.close()
        results.put(("ok", received))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def _join(process, errors=None) -> None:
    process.join(CHILD_TIMEOUT)
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail(f"child process did not finish within {CHILD_TIMEOUT:.0f} s", pytrace=False)
    if process.exitcode != 0:
        detail = ""
        if errors is not None:
            with contextlib.suppress(queue_module.Empty):
                detail = "\n" + errors.get(timeout=5)
        pytest.fail(f"child process exited with {process.exitcode}{detail}", pytrace=False)


# --------------------------------------------------------------------------- the contract


class BrokerContract:
    """The broker contract suite. Subclass as ``TestXxx`` and define ``make_broker``."""

    #: Seconds added to every wait; raise it for a slow server. (Waits check
    #: correctness, never speed: a passing broker never waits this long.)
    margin: float = MARGIN

    def _take(self, broker: Broker, n: int = 1, *, count: int = 1) -> list[Message]:
        """Dequeue until ``n`` messages came or ``margin`` seconds passed."""
        return take(broker, n, within=self.margin, count=count)

    def _take_one(self, broker: Broker, *, within: float | None = None, what: str = "") -> Message:
        within = self.margin if within is None else within
        return take_one(broker, within=within, what=what or "a waiting message")

    @pytest.fixture
    def broker_factory(self, make_broker) -> BrokerFactory:
        """``(queue=None, **settings) -> Broker`` on a fresh queue; deleted afterwards."""
        made: list[Broker] = []

        def factory(queue: str | None = None, **settings) -> Broker:
            config = make_config(**{**SETTINGS, **settings})
            broker = make_broker(queue or unique("qhive-contract"), config)
            made.append(broker)
            return broker

        yield factory
        for broker in reversed(made):
            cleanup(broker.delete_queue, f"{type(broker).__name__}.delete_queue()")
            cleanup(broker.close, f"{type(broker).__name__}.close()")

    @pytest.fixture
    def broker(self, broker_factory) -> Broker:
        return broker_factory()

    # -- identity

    def test_is_a_broker(self, broker):
        assert isinstance(broker, Broker), f"{type(broker).__name__} must subclass Broker"
        assert isinstance(broker.capabilities, Capabilities)
        assert isinstance(broker.queue, str) and broker.queue

    def test_ping(self, broker):
        assert broker.ping() is True

    def test_info_is_a_non_empty_string(self, broker):
        info = broker.info()
        assert isinstance(info, str), f"info() returned {type(info).__name__}, not str"
        assert info.strip(), "info() returned an empty string"

    # -- payloads

    @pytest.mark.parametrize(
        "payload",
        [b"", BINARY, ALL_BYTES, ONE_MIB],
        ids=["empty", "binary", "all-bytes", "1MiB"],
    )
    def test_round_trip_is_byte_exact(self, broker, payload):
        task_id = broker.enqueue(payload)
        assert isinstance(task_id, str), f"enqueue() returned {task_id!r}, not a str"
        message = self._take_one(broker)
        assert_same_bytes(message.payload, payload, "dequeued payload")
        assert isinstance(message.ack_id, str), f"ack_id {message.ack_id!r} is not a str"
        broker.acknowledge(message.ack_id)

    def test_enqueue_returns_distinct_ids(self, broker):
        ids = [broker.enqueue(b"same payload") for _ in range(5)]
        assert len(set(ids)) == 5, f"enqueue() returned repeated ids: {ids}"

    def test_enqueue_many(self, broker):
        payloads = [f"many {i}".encode() for i in range(5)]
        ids = broker.enqueue_many(p for p in payloads)  # any iterable, a generator too
        assert isinstance(ids, list) and len(ids) == 5, f"enqueue_many() returned {ids!r}"
        assert all(isinstance(i, str) for i in ids) and len(set(ids)) == 5
        got = [m.payload for m in self._take(broker, 5, count=5)]
        if broker.capabilities.fifo:
            assert got == payloads
        else:
            assert sorted(got) == sorted(payloads)
        assert broker.enqueue_many([]) == []

    # -- dequeue

    @pytest.mark.parametrize("timeout", [0.0, 0.5])
    def test_dequeue_on_empty_queue_returns_empty_list(self, broker, timeout):
        started = time.monotonic()
        got = broker.dequeue(timeout=timeout)
        elapsed = time.monotonic() - started
        assert got == [], f"dequeue() on an empty queue returned {got!r}"
        assert elapsed < timeout + self.margin, f"dequeue(timeout={timeout}) took {elapsed:.1f} s"

    def test_fifo_order(self, broker):
        skip_unless(broker.capabilities.fifo, broker, "fifo")
        payloads = [f"{i:03d}".encode() for i in range(20)]
        for payload in payloads:
            broker.enqueue(payload)
        got = []
        for message in self._take(broker, 20):
            got.append(message.payload)
            broker.acknowledge(message.ack_id)
        assert got == payloads

    def test_dequeue_never_returns_more_than_allowed(self, broker):
        allowed = 3 if broker.capabilities.bulk else 1
        broker.enqueue_many([b"a", b"b", b"c", b"d", b"e"])
        seen = []
        deadline = time.monotonic() + self.margin
        while len(seen) < 5 and time.monotonic() < deadline:
            batch = broker.dequeue(count=3, timeout=1.0)
            assert len(batch) <= allowed, (
                f"dequeue(count=3) returned {len(batch)} messages; "
                + ("at most count" if broker.capabilities.bulk else "without 'bulk' at most 1")
            )
            seen.extend(batch)
        assert sorted(m.payload for m in seen) == [b"a", b"b", b"c", b"d", b"e"]

    def test_bulk_dequeue_returns_several(self, broker):
        skip_unless(broker.capabilities.bulk, broker, "bulk")
        broker.enqueue_many([f"bulk {i}".encode() for i in range(6)])
        batches = []
        deadline = time.monotonic() + self.margin
        while sum(map(len, batches)) < 6 and time.monotonic() < deadline:
            batch = broker.dequeue(count=6, timeout=1.0)
            if batch:
                batches.append(batch)
        assert sum(map(len, batches)) == 6
        assert any(len(b) > 1 for b in batches), (
            "a 'bulk' broker never returned more than one message with 6 waiting"
        )

    def test_taken_message_is_not_handed_out_again(self, broker):
        broker.enqueue(b"only once")
        message = self._take_one(broker)
        again = broker.dequeue(timeout=0.5)
        assert again == [], (
            "a message was handed out again while in flight"
            if broker.capabilities.receipts
            else "a message was handed out twice"
        )
        broker.acknowledge(message.ack_id)

    def test_blocking_dequeue_returns_when_a_message_arrives(self, broker_factory):
        # A broker that polled would sleep config.poll (10 s) between looks.
        broker = broker_factory(poll=10)
        skip_unless(broker.capabilities.blocking, broker, "blocking")
        producer = broker_factory(broker.queue, poll=10) if broker.capabilities.shared else broker
        timeout = 30.0

        def produce():
            time.sleep(0.3)
            producer.enqueue(b"wake up")

        thread = threading.Thread(target=produce, daemon=True)
        started = time.monotonic()
        thread.start()
        got = broker.dequeue(timeout=timeout)
        elapsed = time.monotonic() - started
        thread.join(self.margin)
        assert [m.payload for m in got] == [b"wake up"], (
            f"dequeue(timeout={timeout}) returned {got!r} after {elapsed:.1f} s"
        )
        assert elapsed < 8.0, (
            f"dequeue() took {elapsed:.1f} s to return a message enqueued after 0.3 s: "
            "a 'blocking' broker must wake up when the message arrives, not at its next poll"
        )
        broker.acknowledge(got[0].ack_id)

    # -- finishing messages

    @pytest.mark.parametrize("method", ["acknowledge", "fail", "delete"])
    def test_finishing_removes_the_message(self, broker, method):
        broker.enqueue(b"finish me")
        message = self._take_one(broker)
        getattr(broker, method)(message.ack_id)
        assert broker.queue_size() == 0
        assert in_flight(broker) in (0, None), f"lock_size() is {broker.lock_size()} after {method}"
        assert broker.dequeue(timeout=0.5) == []

    def test_finished_messages_never_come_back(self, broker_factory):
        broker = broker_factory(retry=SHORT_RETRY)
        skip_unless(broker.capabilities.receipts, broker, "receipts")
        methods = ["acknowledge", "fail", "delete"]
        for method in methods:
            broker.enqueue(method.encode())
        for message in self._take(broker, 3):
            getattr(broker, message.payload.decode())(message.ack_id)
        back = watch(broker, SHORT_RETRY + QUIET)
        assert not back, "messages finished with " + ", ".join(
            f"{m.payload.decode()}()" for m in back
        ) + f" came back after retry={SHORT_RETRY}"

    def test_acknowledge_many(self, broker):
        for n in range(5):
            broker.enqueue(b"many %d" % n)
        taken = self._take(broker, 5)
        broker.acknowledge_many([m.ack_id for m in taken[:4]])
        broker.acknowledge_many([])
        assert broker.queue_size() == 0
        if broker.capabilities.receipts and broker.lock_size() is not None:
            assert broker.lock_size() == 1, "acknowledge_many left messages in flight"
        broker.acknowledge(taken[4].ack_id)

    def test_finishing_twice_is_harmless(self, broker):
        broker.enqueue(b"twice")
        message = self._take_one(broker)
        broker.acknowledge(message.ack_id)
        # The monitor may acknowledge a message an admin already deleted or purged.
        broker.acknowledge(message.ack_id)
        broker.fail(message.ack_id)
        assert broker.queue_size() == 0

    def test_unacknowledged_message_is_redelivered(self, broker_factory):
        broker = broker_factory(retry=SHORT_RETRY)
        skip_unless(broker.capabilities.receipts, broker, "receipts")
        broker.enqueue(b"keep")
        broker.enqueue(b"drop")
        first = {m.payload: m for m in self._take(broker, 2)}
        assert set(first) == {b"keep", b"drop"}
        broker.acknowledge(first[b"drop"].ack_id)

        what = f"an unacknowledged message (retry={SHORT_RETRY})"
        again = self._take_one(broker, within=SHORT_RETRY + self.margin, what=what)
        assert again.payload == b"keep", f"{again.payload!r} came back, it was acknowledged"
        if first[b"keep"].deliveries is not None:
            assert first[b"keep"].deliveries == 1, "the first delivery must count 1"
            assert again.deliveries == 2, (
                f"a redelivered message must have deliveries=2, not {again.deliveries!r}"
            )
        broker.acknowledge(again.ack_id)
        back = watch(broker, SHORT_RETRY + QUIET)
        assert not back, f"{[m.payload for m in back]} came back after being acknowledged"

    def test_touched_message_is_not_redelivered(self, broker_factory):
        retry = 2 * SHORT_RETRY
        broker = broker_factory(retry=retry)
        skip_unless(broker.capabilities.touch, broker, "touch")
        broker.enqueue(b"held")
        taken = self._take_one(broker)
        for _ in range(2):  # renewed before each deadline, until past the first one
            time.sleep(0.6 * retry)
            broker.touch([taken.ack_id])
        early = broker.dequeue(timeout=0.2 * retry)
        assert not early, (f"{[m.payload for m in early]} came back although its receipt was "
                           f"renewed with touch()")
        again = self._take_one(broker, within=retry + self.margin,
                               what=f"a touched message once its renewed receipt ran out "
                                    f"(retry={retry})")
        assert again.payload == b"held"
        broker.acknowledge(again.ack_id)
        broker.touch([again.ack_id])  # finished: touching must not bring it back
        back = watch(broker, retry + QUIET)
        assert not back, f"{[m.payload for m in back]} came back after touch() of a finished one"

    def test_released_message_is_available_at_once(self, broker_factory):
        broker = broker_factory(retry=600)
        skip_unless(broker.capabilities.receipts, broker, "receipts")
        if type(broker).release is Broker.release:
            pytest.skip(f"{type(broker).__name__} does not implement release(); "
                        "released messages come back after retry")
        broker.enqueue(b"given back")
        taken = self._take_one(broker)
        broker.release(taken.ack_id)
        again = self._take_one(broker, what="a released message (retry=600)")
        assert again.payload == b"given back"
        broker.acknowledge(again.ack_id)
        assert broker.queue_size() == 0

    # -- delays (``capabilities.delay``)

    def test_a_delayed_message_is_taken_once_due_not_before(self, broker):
        skip_unless(broker.capabilities.delay, broker, "delay")
        enqueued = time.monotonic()
        broker.enqueue(b"later", delay=DELAY)
        broker.enqueue(b"now")
        first = self._take_one(broker, what="a message enqueued without a delay")
        assert first.payload == b"now", f"{first.payload!r} came before the undelayed message"
        broker.acknowledge(first.ack_id)
        early = watch(broker, DELAY - 0.5 - (time.monotonic() - enqueued))
        assert not early, f"{[m.payload for m in early]} came before its delay ({DELAY} s) passed"
        due = self._take_one(broker, within=DELAY + self.margin, what="a delayed message")
        waited = time.monotonic() - enqueued
        assert due.payload == b"later"
        assert waited >= DELAY - CLOCK_SLACK, f"taken {waited:.2f} s after a delay of {DELAY} s"
        broker.acknowledge(due.ack_id)

    def test_a_waiting_consumer_takes_a_delayed_message_when_due(self, broker):
        skip_unless(broker.capabilities.delay, broker, "delay")
        enqueued = time.monotonic()
        broker.enqueue(b"due soon", delay=DELAY)
        # One wait, long enough for the delay and the second the contract allows after it.
        got = broker.dequeue(timeout=DELAY + 1.0 + self.margin)
        assert [m.payload for m in got] == [b"due soon"], (
            f"dequeue(timeout={DELAY + 1.0 + self.margin}) did not return a message due "
            f"after {DELAY} s: waiting consumers must take delayed messages when due")
        assert time.monotonic() - enqueued >= DELAY - CLOCK_SLACK
        broker.acknowledge(got[0].ack_id)

    def test_a_delayed_message_is_kept_for_other_instances(self, broker_factory):
        broker = broker_factory()
        skip_unless(broker.capabilities.delay, broker, "delay")
        skip_unless(broker.capabilities.shared, broker, "shared")
        broker.enqueue(b"survives", delay=1.0)
        broker.close()
        restarted = broker_factory(broker.queue)
        got = self._take_one(restarted, within=1.0 + self.margin,
                             what="a delayed message enqueued by a closed instance")
        assert got.payload == b"survives"
        restarted.acknowledge(got.ack_id)

    def test_a_message_released_with_a_delay_comes_back_after_it(self, broker):
        skip_unless(broker.capabilities.delay, broker, "delay")
        broker.enqueue(b"retry me")
        taken = self._take_one(broker)
        released = time.monotonic()
        broker.release(taken.ack_id, delay=DELAY)
        early = watch(broker, DELAY - 0.5)
        assert not early, f"{[m.payload for m in early]} came back before its delay"
        again = self._take_one(broker, within=DELAY + self.margin,
                               what="a message released with a delay")
        assert again.payload == b"retry me"
        assert time.monotonic() - released >= DELAY - CLOCK_SLACK
        if taken.deliveries is not None:
            assert again.deliveries == taken.deliveries + 1, "its deliveries must keep counting"
        broker.acknowledge(again.ack_id)
        assert watch(broker, 1.0) == [], "an acknowledged message came back"

    def test_zero_delay_is_no_delay(self, broker):
        skip_unless(broker.capabilities.delay, broker, "delay")
        broker.enqueue(b"at once", delay=0)
        assert self._take_one(broker).payload == b"at once"

    # -- priorities (``capabilities.priority``)

    def test_higher_priorities_come_out_first_in_order_among_equals(self, broker):
        skip_unless(broker.capabilities.priority, broker, "priority")
        sent = [(b"a", 0), (b"b", 0), (b"c", 5), (b"low", PRIORITY_MIN), (b"d", 5),
                (b"top", PRIORITY_MAX), (b"e", -3), (b"f", 0)]
        for payload, priority in sent:
            broker.enqueue(payload, priority=priority)
        expected = [p for p, _ in sorted(sent, key=lambda s: -s[1])]  # a stable sort
        got = [m.payload for m in self._take(broker, len(sent))]
        assert got == expected

    def test_bulk_dequeue_takes_the_highest_priorities(self, broker):
        skip_unless(broker.capabilities.priority, broker, "priority")
        skip_unless(broker.capabilities.bulk, broker, "bulk")
        broker.enqueue_many([b"1", b"2", b"3"])
        broker.enqueue(b"urgent", priority=3)
        got = [m.payload for m in broker.dequeue(count=2, timeout=self.margin)]
        assert got[:1] == [b"urgent"], f"a batch of 2 began with {got[:1]}, not the urgent one"

    def test_a_released_message_keeps_its_priority(self, broker):
        skip_unless(broker.capabilities.priority, broker, "priority")
        skip_unless(broker.capabilities.receipts, broker, "receipts")
        broker.enqueue(b"plain")
        broker.enqueue(b"urgent", priority=2)
        taken = self._take_one(broker)
        assert taken.payload == b"urgent"
        broker.release(taken.ack_id)
        assert self._take_one(broker).payload == b"urgent", "released, it lost its priority"

    def test_a_redelivered_message_keeps_its_priority(self, broker_factory):
        broker = broker_factory(retry=SHORT_RETRY)
        skip_unless(broker.capabilities.priority, broker, "priority")
        skip_unless(broker.capabilities.receipts, broker, "receipts")
        broker.enqueue(b"plain")
        broker.enqueue(b"urgent", priority=4)
        # both taken, neither acknowledged: both come back after retry
        assert [m.payload for m in self._take(broker, 2)] == [b"urgent", b"plain"]
        again = self._take_one(broker, within=SHORT_RETRY + self.margin)
        assert again.payload == b"urgent", f"{again.payload!r} came before a redelivered " \
                                           f"message of a higher priority"

    def test_a_delayed_message_keeps_its_priority(self, broker):
        skip_unless(broker.capabilities.priority, broker, "priority")
        skip_unless(broker.capabilities.delay, broker, "delay")
        broker.enqueue_many([b"1", b"2"])
        broker.enqueue(b"urgent later", delay=1.0, priority=5)
        time.sleep(1.2)
        assert self._take_one(broker).payload == b"urgent later"

    # -- sizes

    def test_queue_size_counts_waiting_messages(self, broker):
        assert broker.queue_size() == 0
        broker.enqueue_many([b"1", b"2", b"3"])
        assert broker.queue_size() == 3
        message = self._take_one(broker)
        assert broker.queue_size() == 2, "a dequeued message must not count as waiting"
        broker.acknowledge(message.ack_id)
        assert broker.queue_size() == 2

    def test_lock_size_counts_messages_in_flight(self, broker):
        skip_unless(broker.capabilities.receipts, broker, "receipts")
        if broker.lock_size() is None:
            pytest.skip(f"{type(broker).__name__}.lock_size() returns None (unknown)")
        assert broker.lock_size() == 0
        broker.enqueue_many([b"1", b"2"])
        assert broker.lock_size() == 0
        message = self._take_one(broker)
        assert broker.lock_size() == 1
        broker.acknowledge(message.ack_id)
        assert broker.lock_size() == 0

    # -- queues

    def test_purge_queue_removes_waiting_and_in_flight(self, broker_factory):
        broker = broker_factory(retry=SHORT_RETRY)
        broker.purge_queue()  # on an empty queue: harmless
        broker.enqueue_many([b"1", b"2", b"3"])
        self._take_one(broker)  # in flight (or gone) when the queue is purged
        broker.purge_queue()
        assert broker.queue_size() == 0
        assert in_flight(broker) in (0, None)
        wait = SHORT_RETRY + QUIET if broker.capabilities.receipts else 0.5
        back = watch(broker, wait)
        assert not back, f"{[m.payload for m in back]} survived purge_queue()"
        broker.enqueue(b"after purge")
        assert self._take_one(broker).payload == b"after purge", "the broker must still work"

    def test_delete_queue(self, broker_factory):
        broker = broker_factory()
        broker.enqueue_many([b"1", b"2"])
        broker.delete_queue()
        fresh = broker_factory(broker.queue)
        assert fresh.queue_size() == 0
        assert fresh.dequeue(timeout=0.5) == [], "messages survived delete_queue()"
        fresh.enqueue(b"new life")
        assert self._take_one(fresh).payload == b"new life"

    def test_queues_are_isolated(self, broker_factory):
        one, other = broker_factory(), broker_factory()
        one.enqueue(b"for one")
        assert other.queue_size() == 0
        assert other.dequeue(timeout=0.5) == [], "a message leaked into another queue"
        other.enqueue(b"for other")
        one.purge_queue()
        assert other.queue_size() == 1, "purge_queue() emptied another queue"
        assert self._take_one(other).payload == b"for other"

    def test_instances_on_one_queue_share_it(self, broker_factory):
        broker = broker_factory()
        skip_unless(broker.capabilities.shared, broker, "shared")
        twin = broker_factory(broker.queue)
        twin.enqueue(b"shared")
        assert self._take_one(broker).payload == b"shared"

    # -- lifecycle

    def test_close_then_use_again(self, broker):
        broker.enqueue(b"before close")
        broker.close()
        assert self._take_one(broker).payload == b"before close", "a closed broker must reconnect"
        broker.close()
        broker.close()

    def test_pickled_copy_works(self, broker):
        copy = pickled_copy(broker, "broker")
        assert type(copy) is type(broker) and copy.queue == broker.queue
        copy.enqueue(b"from the copy")
        reader = broker if broker.capabilities.shared else copy
        assert self._take_one(reader).payload == b"from the copy"
        assert pickle.loads(pickle.dumps(copy)).queue == broker.queue  # pickles again

    def test_pickled_copy_works_in_a_child_process(self, broker):
        skip_unless(broker.capabilities.shared, broker, "shared")
        spawn = _spawn()
        errors = spawn.Queue()
        payload = b"from the child \x00\xff"
        child = spawn.Process(target=_child_enqueue, args=(broker, payload, errors))
        child.start()
        _join(child, errors)
        message = self._take_one(broker, what="the message the child enqueued")
        assert_same_bytes(message.payload, payload, "payload enqueued by the child")
        broker.acknowledge(message.ack_id)

    def test_concurrent_consumers_never_share_a_message(self, broker):
        skip_unless(broker.capabilities.shared, broker, "shared")
        payloads = [f"concurrent {i:03d}".encode() for i in range(CONCURRENT_MESSAGES)]
        broker.enqueue_many(payloads)
        spawn = _spawn()
        barrier, results = spawn.Barrier(2), spawn.Queue()
        children = [
            spawn.Process(target=_child_consume, args=(broker, barrier, results)) for _ in range(2)
        ]
        for child in children:
            child.start()
        outcomes = []
        try:
            for _ in children:
                outcomes.append(results.get(timeout=CHILD_TIMEOUT))
        except queue_module.Empty:
            pytest.fail("a consumer process did not report back", pytrace=False)
        finally:
            for child in children:
                _join(child)
        errors = [detail for status, detail in outcomes if status != "ok"]
        assert not errors, "a consumer failed:\n" + "\n".join(errors)
        first, second = (detail for _, detail in outcomes)
        both = set(first) & set(second)
        assert not both, f"{len(both)} messages went to both consumers, e.g. {sorted(both)[:3]}"
        assert len(first) == len(set(first)) and len(second) == len(set(second)), (
            "a consumer received a message twice"
        )
        missing = set(payloads) - set(first) - set(second)
        assert not missing, f"{len(missing)} messages were never received"

    # -- statistics

    def test_stats_set_and_get(self, broker):
        skip_unless(broker.capabilities.stats, broker, "stats")
        key = unique("qhive-contract-stat")
        assert broker.get_stat(key) is None
        broker.set_stat(key, b"\x00first", 120)
        assert broker.get_stat(key) == b"\x00first"
        broker.set_stat(key, b"second", 120)
        assert broker.get_stat(key) == b"second", "set_stat() must replace the value"

    def test_stats_by_prefix(self, broker):
        skip_unless(broker.capabilities.stats, broker, "stats")
        prefix, other = unique("qhive-contract-stats") + ":", unique("qhive-contract-stats") + ":"
        broker.set_stat(prefix + "a", b"A", 120)
        broker.set_stat(prefix + "b", b"B", 120)
        broker.set_stat(prefix + "b", b"B2", 120)
        broker.set_stat(other + "c", b"C", 120)
        assert sorted(broker.get_stats(prefix)) == [b"A", b"B2"]
        assert broker.get_stats(unique("qhive-contract-none")) == []

    def test_stats_expire(self, broker):
        skip_unless(broker.capabilities.stats, broker, "stats")
        prefix = unique("qhive-contract-ttl") + ":"
        ttl = 1.5
        broker.set_stat(prefix + "short", b"short", ttl)
        broker.set_stat(prefix + "long", b"long", 120)
        deadline = time.monotonic() + ttl + self.margin
        while broker.get_stat(prefix + "short") is not None:
            assert time.monotonic() < deadline, f"a stat with ttl={ttl} never expired"
            time.sleep(0.1)
        assert broker.get_stats(prefix) == [b"long"]
        assert broker.get_stat(prefix + "long") == b"long"
