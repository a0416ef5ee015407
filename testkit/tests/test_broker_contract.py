"""BrokerContract passes a correct broker and fails broken ones.

The correct broker keeps its queue in an SQLite file, so it is ``shared`` and
the multi-process tests of the contract run too.
"""

# pytester drops the modules an in-process run imported. Importing these first keeps
# one resource tracker for the whole session (a second one would print KeyErrors).
import multiprocessing.queues
import multiprocessing.resource_tracker
import multiprocessing.synchronize  # noqa: F401

SQLITE_BROKER = '''
import contextlib
import dataclasses
import os
import sqlite3
import time

from qhive.contracts import Broker, Capabilities, Message

SCHEMA = """
create table if not exists q (id integer primary key autoincrement, queue text,
                              payload blob, visible real, deliveries integer,
                              priority integer);
create table if not exists stats (key text primary key, value blob, expires real);
"""


class SqliteBroker(Broker):
    """Correct: receipts (a claimed row is invisible until ``retry`` passes), bulk, stats,
    touch, delay, priority."""

    capabilities = Capabilities(receipts=True, bulk=True, fifo=True, stats=True, shared=True,
                                touch=True, delay=True, priority=True)
    order = "priority desc, id"

    def __init__(self, queue="default", *, config=None, path):
        super().__init__(queue, config=config)
        self.path = path

    def _file(self):
        return self.path

    @contextlib.contextmanager
    def _db(self):
        db = sqlite3.connect(self._file(), timeout=60, isolation_level=None)
        try:
            db.executescript(SCHEMA)
            yield db
        finally:
            db.close()

    def enqueue(self, payload, *, delay=0.0, priority=0):
        visible = time.time() + delay if delay else 0
        with self._db() as db:
            cursor = db.execute(
                "insert into q (queue, payload, visible, deliveries, priority) "
                "values (?, ?, ?, 0, ?)",
                (self.queue, payload, visible, priority),
            )
            return str(cursor.lastrowid)

    def release(self, ack_id, *, delay=0.0):
        now = time.time()
        with self._db() as db:
            db.execute("update q set visible = ? where id = ? and visible > ?",
                       (now + delay if delay else 0, int(ack_id), now))

    def dequeue(self, count=1, timeout=0.0):
        return self._poll(lambda: self._claim(count), timeout)

    def _claim(self, count):
        now = time.time()
        with self._db() as db:
            db.execute("begin immediate")
            rows = db.execute(
                "select id, payload, deliveries from q where queue = ? and visible <= ? "
                f"order by {self.order} limit ?",
                (self.queue, now, count),
            ).fetchall()
            for row in rows:
                db.execute(
                    "update q set visible = ?, deliveries = deliveries + 1 where id = ?",
                    (now + self.config.retry, row[0]),
                )
            db.execute("commit")
        return [Message(str(i), bytes(p), d + 1) for i, p, d in rows]

    def acknowledge(self, ack_id):
        with self._db() as db:
            db.execute("delete from q where queue = ? and id = ?", (self.queue, int(ack_id)))

    def touch(self, ack_ids):
        now = time.time()
        with self._db() as db:
            for ack_id in ack_ids:
                db.execute("update q set visible = ? where id = ? and visible > ?",
                           (now + self.config.retry, int(ack_id), now))

    def _count(self, op):
        with self._db() as db:
            sql = f"select count(*) from q where queue = ? and visible {op} ?"
            return db.execute(sql, (self.queue, time.time())).fetchone()[0]

    def queue_size(self):
        return self._count("<=")

    def lock_size(self):
        return self._count(">")

    def purge_queue(self):
        with self._db() as db:
            db.execute("delete from q where queue = ?", (self.queue,))

    def info(self):
        return f"SQLite {sqlite3.sqlite_version}"

    def set_stat(self, key, value, ttl):
        with self._db() as db:
            expires = time.time() + ttl
            db.execute("insert or replace into stats values (?, ?, ?)", (key, value, expires))

    def get_stat(self, key):
        with self._db() as db:
            row = db.execute(
                "select value from stats where key = ? and expires > ?", (key, time.time())
            ).fetchone()
        return bytes(row[0]) if row else None

    def get_stats(self, prefix):
        with self._db() as db:
            rows = db.execute(
                "select value from stats where substr(key, 1, ?) = ? and expires > ?",
                (len(prefix), prefix, time.time()),
            ).fetchall()
        return [bytes(r[0]) for r in rows]


class DropsLastByte(SqliteBroker):
    def dequeue(self, count=1, timeout=0.0):
        got = super().dequeue(count, timeout)
        return [dataclasses.replace(m, payload=m.payload[:-1]) for m in got]


class LosesUnacked(SqliteBroker):
    """Broken: declares receipts, but a taken message is gone at once."""

    def dequeue(self, count=1, timeout=0.0):
        got = super().dequeue(count, timeout)
        for message in got:
            self.acknowledge(message.ack_id)
        return got


class HandsOutTwice(SqliteBroker):
    """Broken: forgets to hide what it hands out."""

    def _claim(self, count):
        with self._db() as db:
            rows = db.execute(
                "select id, payload from q where queue = ? order by id limit ?", (self.queue, count)
            ).fetchall()
        return [Message(str(i), bytes(p)) for i, p in rows]


class IgnoresTouch(SqliteBroker):
    """Broken: declares touch, but receipts run out all the same."""

    def touch(self, ack_ids):
        pass


class IgnoresDelay(SqliteBroker):
    """Broken: declares delay, but a delayed message can be taken at once."""

    def enqueue(self, payload, *, delay=0.0, priority=0):
        return super().enqueue(payload, priority=priority)

    def release(self, ack_id, *, delay=0.0):
        super().release(ack_id)


class IgnoresPriority(SqliteBroker):
    """Broken: declares priority, but hands messages out in enqueue order."""

    order = "id"


class NotShared(SqliteBroker):
    """Broken: declares shared, but every process has a database of its own."""

    def _file(self):
        return f"{self.path}.{os.getpid()}"
'''

TESTS = '''
import pytest

from qhive_testkit import BrokerContract
import sqlite_broker


class Base(BrokerContract):
    driver = sqlite_broker.SqliteBroker

    @pytest.fixture
    def make_broker(self, tmp_path):
        path = str(tmp_path / "queue.sqlite3")
        return lambda queue, config: self.driver(queue, config=config, path=path)


class TestGood(Base):
    pass


class TestDropsLastByte(Base):
    driver = sqlite_broker.DropsLastByte


class TestLosesUnacked(Base):
    driver = sqlite_broker.LosesUnacked
    margin = 2.0


class TestHandsOutTwice(Base):
    driver = sqlite_broker.HandsOutTwice


class TestIgnoresTouch(Base):
    driver = sqlite_broker.IgnoresTouch


class TestIgnoresDelay(Base):
    driver = sqlite_broker.IgnoresDelay


class TestIgnoresPriority(Base):
    driver = sqlite_broker.IgnoresPriority


class TestNotShared(Base):
    driver = sqlite_broker.NotShared
    margin = 2.0
'''

# Broken drivers run only the tests meant to catch them: the whole suite once is enough.
SELECTION = " or ".join(
    [
        "TestGood",
        "(TestDropsLastByte and round_trip)",
        "(TestLosesUnacked and unacknowledged_message_is_redelivered)",
        "(TestHandsOutTwice and not_handed_out_again)",
        "(TestNotShared and (child_process or concurrent))",
        "(TestIgnoresTouch and touched)",
        "(TestIgnoresDelay and delay)",
        "(TestIgnoresPriority and priorit)",
    ]
)


def test_broker_contract(run_contract):
    outcomes = run_contract(TESTS, "-k", SELECTION, sqlite_broker=SQLITE_BROKER)
    assert outcomes.not_passed("TestGood") == {
        "test_blocking_dequeue_returns_when_a_message_arrives": "skipped",
    }
    assert outcomes.of("TestDropsLastByte") == {
        "test_round_trip_is_byte_exact[empty]": "passed",  # nothing to drop
        "test_round_trip_is_byte_exact[binary]": "failed",
        "test_round_trip_is_byte_exact[all-bytes]": "failed",
        "test_round_trip_is_byte_exact[1MiB]": "failed",
    }
    assert outcomes.failed("TestLosesUnacked") == {"test_unacknowledged_message_is_redelivered"}
    assert outcomes.failed("TestHandsOutTwice") == {"test_taken_message_is_not_handed_out_again"}
    assert outcomes.failed("TestIgnoresTouch") == {"test_touched_message_is_not_redelivered"}
    assert outcomes.failed("TestIgnoresDelay") == {
        "test_a_delayed_message_is_taken_once_due_not_before",
        "test_a_waiting_consumer_takes_a_delayed_message_when_due",
        "test_a_message_released_with_a_delay_comes_back_after_it",
    }
    assert outcomes.failed("TestIgnoresPriority") == {
        "test_higher_priorities_come_out_first_in_order_among_equals",
        "test_bulk_dequeue_takes_the_highest_priorities",
        "test_a_released_message_keeps_its_priority",
        "test_a_redelivered_message_keeps_its_priority",
        "test_a_delayed_message_keeps_its_priority",
    }
    assert outcomes.failed("TestNotShared") == {
        "test_pickled_copy_works_in_a_child_process",
        "test_concurrent_consumers_never_share_a_message",
    }
