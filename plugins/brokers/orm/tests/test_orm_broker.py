"""What the ORM broker promises beyond the contract, on real SQLite, PostgreSQL
and MariaDB: claims under contention, transactions, LISTEN/NOTIFY, reconnects,
the Django side (models, migrations, entry point) and statistics."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import pickle
import queue as queue_module
import threading
import time
import uuid

import pytest
from qhive.config import Config
from qhive.errors import BrokerConnectionError, BrokerError, ConfigError, SetupError
from qhive_broker_orm.broker import QUEUE_TABLE, STAT_TABLE, OrmBroker, notify_channel
from qhive_testkit.services import mysql_params, postgres_params, require

SERVERS = pytest.mark.parametrize("database", ["postgres", "mysql"], indirect=True)
POSTGRES = pytest.mark.parametrize("database", ["postgres"], indirect=True)
#: Where an idle dequeue sleeps until woken: NOTIFY, and SQLite's doorbell.
WAKING = pytest.mark.parametrize("database", ["postgres", "default"], indirect=True)


def unique(prefix: str = "orm-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make(database):
    """``make(queue=None, **settings) -> OrmBroker`` on ``database``; purged afterwards."""
    made = []

    def factory(queue=None, **settings):
        config = Config.from_dict({"retry": 30, "poll": 0.05, **settings})
        broker = OrmBroker(queue or unique(), config=config, orm=database)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        with contextlib.suppress(Exception):
            broker.purge_queue()
        broker.close()


def later(delay, func, *args):
    """Run ``func(*args)`` in a thread after ``delay`` seconds; the thread closes
    the database connections it opened. Returns the started thread."""

    def run():
        from django.db import connections

        time.sleep(delay)
        try:
            func(*args)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _spawn():
    return multiprocessing.get_context("spawn")


def _results(results, n, what):
    got = []
    for _ in range(n):
        try:
            status, detail = results.get(timeout=90)
        except queue_module.Empty:
            pytest.fail(f"{what} did not report back", pytrace=False)
        assert status == "ok", f"{what} failed:\n{detail}"
        got.append(detail)
    return got


def _join(processes):
    for process in processes:
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join()
            pytest.fail("a child process did not finish", pytrace=False)
        assert process.exitcode == 0


# --------------------------------------------------------------------------- Django side


def test_models_name_the_tables_the_broker_uses(django_project):
    from qhive_broker_orm.models import BrokerStat, QueuedTask

    assert QueuedTask._meta.db_table == QUEUE_TABLE
    assert BrokerStat._meta.db_table == STAT_TABLE
    assert str(QueuedTask._meta.verbose_name) == "Queued task"
    index = {tuple(i.fields) for i in QueuedTask._meta.indexes}
    assert ("queue", "-priority", "visible_at", "id") in index


def test_migrations_are_up_to_date(django_project):
    from django.core.management import call_command

    call_command("makemigrations", "qhive_broker_orm", check=True, dry_run=True, verbosity=0)


def test_entry_point_and_config_select_the_broker(database):
    from qhive.drivers import load_driver
    from qhive.pipeline import Pipeline

    assert load_driver("broker", "orm") is OrmBroker
    # Django Q2's way: Q_CLUSTER["orm"] names the database alias.
    config = Config.from_dict({"name": unique("orm-cluster"), "orm": database,
                               "result_store": "memory"}, secret_key="s3cret")
    pipeline = Pipeline(config)
    try:
        broker = pipeline.broker
        assert isinstance(broker, OrmBroker) and broker.alias == database
        task_id = pipeline.enqueue("math.factorial", (5,))
        assert broker.queue_size() == 1
        pipeline.drain()
        assert pipeline.result_store.get(task_id).result == 120
        assert broker.queue_size() == 0 and broker.lock_size() == 0
    finally:
        pipeline.broker.purge_queue()
        pipeline.close()


def test_rows_are_readable_through_the_model(make, database):
    """The broker's raw SQL writes times the way Django reads them (UTC, aware)."""
    from django.utils import timezone
    from qhive_broker_orm.models import QueuedTask

    broker = make(retry=600)
    before = timezone.now()
    broker.enqueue(b"row")
    rows = QueuedTask.objects.using(database).of_queue(broker.queue)
    row = rows.get()
    assert bytes(row.payload) == b"row" and row.deliveries == 0 and not row.in_flight
    assert abs((row.visible_at - before).total_seconds()) < 5, (row.visible_at, before)
    assert row.created == row.visible_at
    assert rows.waiting().count() == 1

    [message] = broker.dequeue()
    row = rows.get()
    assert message.ack_id == str(row.pk) and row.deliveries == 1 and row.in_flight
    hidden_for = (row.visible_at - timezone.now()).total_seconds()
    assert 590 < hidden_for <= 600, hidden_for
    assert rows.in_flight().count() == 1 and rows.waiting().count() == 0


def test_capabilities_follow_the_database(make, database):
    broker = make()
    assert OrmBroker.capabilities.blocking is False  # on the class: what every database gets
    caps = broker.capabilities
    assert caps.receipts and caps.bulk and caps.fifo and caps.stats and caps.shared
    # PostgreSQL notifies, a SQLite file rings its doorbell; MariaDB is polled
    assert caps.blocking is (database in ("postgres", "default"))


def test_info_and_ping(make, database):
    broker = make()
    assert broker.ping() is True
    vendor = {"default": "sqlite", "postgres": "postgresql", "mysql": "mariadb"}[database]
    assert broker.info().startswith(f"ORM {database} ({vendor} ")
    assert repr(broker) == f"<OrmBroker queue={broker.queue!r} orm={database!r}>"


def test_unknown_database_alias_is_a_config_error(django_project):
    with pytest.raises(ConfigError, match=r"'nowhere' \(Q_CLUSTER\['orm'\]\) is not in "):
        OrmBroker("q", orm="nowhere")


@pytest.fixture
def extra_alias(django_project):
    """``extra_alias(name, settings_entry)``: a database alias added for one test."""
    from django.conf import settings
    from django.db import connections

    added = []

    def add(alias, entry):
        settings.DATABASES[alias] = entry
        filled = connections.configure_settings({"default": {}, alias: dict(entry)})[alias]
        connections.settings[alias] = filled
        added.append(alias)
        return alias

    yield add
    for alias in added:
        with contextlib.suppress(Exception):
            connections[alias].close()
        with contextlib.suppress(Exception):
            del connections[alias]
        connections.settings.pop(alias, None)
        settings.DATABASES.pop(alias, None)


@pytest.fixture
def unreachable_alias(extra_alias):
    """A PostgreSQL alias pointing at a port nothing listens on."""
    return extra_alias("qhive_orm_unreachable", {
        "ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1", "PORT": 9,
        "USER": "postgres", "NAME": "nothing", "OPTIONS": {"connect_timeout": 3}})


def test_ping_names_an_unreachable_database(unreachable_alias):
    broker = OrmBroker("q", orm=unreachable_alias)
    expected = rf"ping failed on database '{unreachable_alias}'"
    with pytest.raises(BrokerConnectionError, match=expected):
        broker.ping()
    with pytest.raises(BrokerConnectionError):
        broker.enqueue(b"x")


def test_a_missing_table_says_to_migrate(extra_alias, tmp_path):
    alias = extra_alias("qhive_orm_unmigrated", {
        "ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "empty.sqlite3")})
    broker = OrmBroker("q", orm=alias)
    expected = r"run 'manage.py migrate --database qhive_orm_unmigrated'"
    with pytest.raises(SetupError, match=expected):  # what a starting cluster checks
        broker.ping()
    with pytest.raises(BrokerError, match=expected):
        broker.enqueue(b"x")
    with pytest.raises(BrokerError, match="qhive_broker_stat"):
        broker.get_stats("x")


# --------------------------------------------------------------------------- claims


def test_claims_under_contention_are_atomic_and_fifo(make, database):
    """Three consumer processes drain a queue the parent keeps filling: every
    message is received exactly once, and each consumer sees them in order."""
    broker = make()
    first = [f"{i:04d}".encode() for i in range(150)]
    later = [f"{i:04d}".encode() for i in range(150, 300)]
    broker.enqueue_many(first)
    spawn = _spawn()
    barrier, done, results = spawn.Barrier(4), spawn.Event(), spawn.Queue()
    from orm_broker_children import consume

    children = [spawn.Process(target=consume, args=(broker, barrier, done, results))
                for _ in range(3)]
    for child in children:
        child.start()
    try:
        barrier.wait(timeout=60)
        for payload in later:  # one by one, while the consumers take
            broker.enqueue(payload)
        done.set()
        outcomes = _results(results, 3, "a consumer process")
    finally:
        done.set()
        _join(children)

    everything = [p for received in outcomes for p, _ in received]
    assert len(everything) == len(set(everything)), "a message was delivered twice"
    assert sorted(everything) == first + later, "messages were lost"
    assert all(d == 1 for received in outcomes for _, d in received)
    for received in outcomes:
        order = [p for p, _ in received]
        assert order == sorted(order), "a consumer received messages out of order"
    if database != "default":  # SQLite's busy handler is unfair: one process may win every time
        assert sum(1 for r in outcomes if r) >= 2, "one consumer took everything: no contention"
    assert broker.queue_size() == 0 and broker.lock_size() == 0


def test_bulk_dequeue_takes_the_oldest_first(make):
    broker = make()
    broker.enqueue_many([b"a", b"b", b"c", b"d", b"e"])
    assert [m.payload for m in broker.dequeue(count=3)] == [b"a", b"b", b"c"]
    assert [m.payload for m in broker.dequeue(count=3)] == [b"d", b"e"]
    assert broker.dequeue(count=3) == []
    assert broker.lock_size() == 5


def test_enqueue_many_in_several_statements_keeps_order(make):
    broker = make()
    broker.insert_rows = 3  # 10 payloads: 4 INSERTs, one transaction
    payloads = [f"{i:02d}".encode() for i in range(10)]
    ids = broker.enqueue_many(iter(payloads))
    assert len(set(ids)) == 10 and [int(i) for i in ids] == sorted(int(i) for i in ids)
    broker.insert_bytes = 5  # by size: every payload in a statement of its own
    assert len(broker.enqueue_many([b"xyz", b"uvw"])) == 2
    got = broker.dequeue(count=20)
    assert [m.payload for m in got] == [*payloads, b"xyz", b"uvw"]
    assert [m.ack_id for m in got[:10]] == ids


def test_acknowledge_many(make):
    broker = make()
    broker.insert_rows = 2  # 3 DELETEs
    broker.enqueue_many([b"1", b"2", b"3", b"4", b"5", b"6"])
    got = broker.dequeue(count=5)
    broker.acknowledge_many(m.ack_id for m in got)
    broker.acknowledge_many([])
    broker.acknowledge_many([got[0].ack_id])  # already gone: harmless
    assert broker.lock_size() == 0 and broker.queue_size() == 1


def test_release_puts_a_message_back_in_its_place(make):
    broker = make()
    broker.enqueue_many([b"first", b"second", b"third"])
    [taken] = broker.dequeue()
    assert taken.payload == b"first"
    broker.release(taken.ack_id)
    got = broker.dequeue(count=3)
    assert [m.payload for m in got] == [b"first", b"second", b"third"]
    assert [m.deliveries for m in got] == [2, 1, 1]
    broker.release("123456789012")  # gone or never there: harmless


def test_finishing_an_unknown_or_bad_ack_id(make):
    broker = make()
    broker.acknowledge("999999999999")  # already gone: no error
    broker.fail("999999999999")
    with pytest.raises(ValueError, match="not an ORM broker ack id"):
        broker.acknowledge("not-a-number")


def test_payloads_must_be_bytes(make):
    broker = make()
    with pytest.raises(TypeError, match="queues bytes"):
        broker.enqueue("text")
    assert broker.enqueue(bytearray(b"ok"))


def test_queue_names_are_checked(database):
    with pytest.raises(ConfigError, match="1 to 100 characters"):
        OrmBroker("x" * 101, orm=database)


# --------------------------------------------------------------------------- transactions


def test_enqueue_in_a_rolled_back_transaction_leaves_nothing(make, database):
    from django.db import transaction

    broker = make()
    with pytest.raises(RuntimeError), transaction.atomic(using=database):
        broker.enqueue(b"rolled back")
        broker.enqueue_many([b"also", b"rolled back"])
        raise RuntimeError("abort")
    assert broker.queue_size() == 0
    assert broker.dequeue() == []


def test_enqueue_in_a_transaction_is_seen_at_commit(make, database):
    from django.db import connections, transaction

    broker = make()
    seen = []

    def look():  # another thread: another connection
        try:
            seen.append(broker.queue_size())
        finally:
            connections.close_all()

    with transaction.atomic(using=database):
        broker.enqueue(b"committed")
        thread = threading.Thread(target=look)
        thread.start()
        thread.join(30)
    assert seen == [0], "a message enqueued in an open transaction was visible outside it"
    assert [m.payload for m in broker.dequeue()] == [b"committed"]


@WAKING
def test_waiting_dequeue_wakes_at_commit(make, database):
    from django.db import connections, transaction

    waiting = make(poll=5)
    waiting.recheck_interval = 30  # only a notification can wake it in time
    producer = make(waiting.queue)
    out = {}

    def wait():
        try:
            out["got"] = waiting.dequeue(timeout=20)
            out["at"] = time.monotonic()
        finally:
            connections.close_all()

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    with transaction.atomic(using=database):
        producer.enqueue(b"at commit")
        time.sleep(0.5)
        assert "at" not in out, "dequeue returned before the enqueueing transaction committed"
        committed = time.monotonic()
    thread.join(30)
    assert [m.payload for m in out["got"]] == [b"at commit"]
    assert out["at"] - committed < 2.0


# --------------------------------------------------------------------------- LISTEN / NOTIFY


@WAKING
def test_notify_from_another_process_wakes_a_waiting_dequeue(make, database):
    broker = make(poll=5)
    broker.recheck_interval = 30
    spawn = _spawn()
    go, results = spawn.Event(), spawn.Queue()
    from orm_broker_children import enqueue_when_told

    child = spawn.Process(target=enqueue_when_told, args=(broker, go, results))
    child.start()
    try:
        go.set()
        started = time.monotonic()
        got = broker.dequeue(timeout=30)
        returned = time.time()
        [enqueued_at] = _results(results, 1, "the producer process")
    finally:
        _join([child])
    assert [m.payload for m in got] == [b"from another process"]
    latency = returned - enqueued_at
    assert latency < 2.0, f"woke {latency:.2f} s after the enqueue (poll=5)"
    assert time.monotonic() - started < 25
    if database != "postgres":
        return
    # The LISTEN connection stays for the next wait, and is not pickled.
    assert broker._listener is not None
    copy = pickle.loads(pickle.dumps(broker))
    assert copy._listener is None and copy.queue == broker.queue
    broker.close()
    assert broker._listener is None


@WAKING
def test_wakes_again_and_ignores_notifications_already_consumed(make):
    broker = make(poll=5)
    broker.recheck_interval = 30
    producer = make(broker.queue)
    for n in range(2):
        timer = later(0.3, producer.enqueue, f"wake {n}".encode())
        started = time.monotonic()
        got = broker.dequeue(timeout=20)
        timer.join()
        assert [m.payload for m in got] == [f"wake {n}".encode()]
        assert time.monotonic() - started < 2.0
        broker.acknowledge(got[0].ack_id)
    # A notification for a message already taken: one look, nothing, back to sleep.
    producer.enqueue(b"taken by someone else")
    assert producer.dequeue()
    started = time.monotonic()
    assert broker.dequeue(timeout=0.5) == []
    assert 0.45 < time.monotonic() - started < 2.0


@WAKING
def test_released_message_wakes_a_waiting_dequeue(make):
    broker = make(poll=5)
    broker.recheck_interval = 30
    other = make(broker.queue)
    other.enqueue(b"released")
    [taken] = other.dequeue()
    later(0.3, other.release, taken.ack_id)
    started = time.monotonic()
    got = broker.dequeue(timeout=20)
    assert [m.payload for m in got] == [b"released"]
    assert time.monotonic() - started < 2.0


@POSTGRES
def test_without_a_listen_connection_it_polls(make, caplog, monkeypatch):
    broker = make(poll=0.05)
    monkeypatch.setattr(broker, "_listen_params", lambda: {
        "host": "127.0.0.1", "port": 9, "dbname": "x", "connect_timeout": 3})
    with caplog.at_level(logging.WARNING, logger="qhive.broker.orm"):
        assert broker.dequeue(timeout=0.3) == []
    assert "cannot LISTEN" in caplog.text
    later(0.2, broker.enqueue, b"polled")
    assert [m.payload for m in broker.dequeue(timeout=5)] == [b"polled"]


@POSTGRES
def test_a_dead_listen_connection_is_replaced(make, caplog):
    broker = make(poll=0.05)
    broker.enqueue(b"one")
    assert broker.dequeue(timeout=1)  # opens the LISTEN connection
    _terminate_postgres_backend(broker._listener.conn.info.backend_pid)
    later(0.3, broker.enqueue, b"two")
    with caplog.at_level(logging.WARNING, logger="qhive.broker.orm"):
        got = broker.dequeue(timeout=5)
    assert [m.payload for m in got] == [b"two"]
    assert "LISTEN connection" in caplog.text
    broker.enqueue(b"three")
    assert [m.payload for m in broker.dequeue(timeout=5)] == [b"three"]
    assert broker._listener is not None  # a new one


@POSTGRES
# The fork is the point: a process with the broker's listener thread forks, as a user's
# fork-based pool would; Python >= 3.12 warns about any fork of a threaded process.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_leaves_the_parents_listen_connection_alone(make, database):
    broker = make(poll=5)
    broker.recheck_interval = 30
    producer = make(broker.queue)
    assert broker.dequeue(timeout=0.1) == []  # opens the LISTEN connection
    listener = broker._listener
    fork = multiprocessing.get_context("fork")
    results = fork.Queue()
    from orm_broker_children import forked_dequeue

    child = fork.Process(target=forked_dequeue, args=(broker, database, results))
    child.start()
    try:
        assert _results(results, 1, "the forked child") == [[]]
    finally:
        _join([child])
    assert broker._listener is listener
    later(0.3, producer.enqueue, b"after the fork")
    started = time.monotonic()
    assert [m.payload for m in broker.dequeue(timeout=20)] == [b"after the fork"]
    assert time.monotonic() - started < 2.0, "the parent's LISTEN connection stopped working"
    assert broker.ping()  # and so did its Django connection


def test_notify_channel_fits_postgres_identifiers():
    assert notify_channel("default") == "qhive_default"
    long = notify_channel("é" * 100)
    assert len(long.encode()) <= 63 and long != notify_channel("é" * 99)


# --------------------------------------------------------------------------- reconnecting


def _terminate_postgres_backend(pid):
    import psycopg

    require("postgres")
    with psycopg.connect(**postgres_params(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        for _ in range(100):  # wait until it is gone
            if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                 [pid]).fetchone():
                return
            time.sleep(0.02)


def _kill_server_connection(database):
    from django.db import connections

    conn = connections[database]
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute("SELECT pg_backend_pid()")
            _terminate_postgres_backend(cursor.fetchone()[0])
        else:
            import pymysql

            cursor.execute("SELECT CONNECTION_ID()")
            ident = cursor.fetchone()[0]
            admin = pymysql.connect(**mysql_params(), autocommit=True)
            try:
                admin.cursor().execute(f"KILL {int(ident)}")
            finally:
                admin.close()


@SERVERS
@pytest.mark.parametrize("operation", ["dequeue", "enqueue"])
def test_recovers_after_the_server_closed_the_connection(make, database, operation):
    broker = make()
    broker.enqueue(b"before")
    _kill_server_connection(database)
    if operation == "dequeue":
        assert [m.payload for m in broker.dequeue()] == [b"before"]
    else:
        broker.enqueue(b"after")
        assert broker.queue_size() == 2
    assert broker.ping()


# --------------------------------------------------------------------------- statistics


def test_stats_sweep_deletes_expired_rows(make, database):
    from qhive_broker_orm.models import BrokerStat

    broker = make()
    prefix = unique("orm-stat") + ":"
    broker.set_stat(prefix + "gone", b"x", 0.2)
    broker.set_stat(prefix + "kept", b"y", 60)
    time.sleep(0.4)
    broker.stats_sweep_interval = 0
    assert broker.get_stats(prefix) == [b"y"]
    keys = set(BrokerStat.objects.using(database).filter(key__startswith=prefix)
               .values_list("key", flat=True))
    assert keys == {prefix + "kept"}
    BrokerStat.objects.using(database).filter(key__startswith=prefix).delete()


def test_stats_prefix_is_literal(make, database):
    broker = make()
    base = unique("orm-stat")
    broker.set_stat(f"{base}:a_b%|c:1", b"literal", 60)
    broker.set_stat(f"{base}:axbyzc:2", b"wildcard", 60)
    broker.set_stat(f"{base.upper()}:a_b%|c:3", b"other case", 60)
    assert broker.get_stats(f"{base}:a_b%|c:") == [b"literal"]
    assert broker.get_stat(f"{base.upper()}:a_b%|c:1") is None
    with pytest.raises(ValueError, match="stat keys"):
        broker.set_stat("k" * 256, b"", 1)


def test_stats_are_shared_between_instances(make):
    one = make()
    other = make()
    key = unique("orm-stat")
    one.set_stat(key, b"\x00\xff", 60)
    assert other.get_stat(key) == b"\x00\xff"
    other.set_stat(key, b"newer", dt.timedelta(seconds=60).total_seconds())
    assert one.get_stat(key) == b"newer"


# --------------------------------------------------------------------------- batches while busy


def _lingering(broker):
    """Record the pauses of ``broker`` before a claim, instead of sleeping them."""
    pauses = []
    broker._linger = lambda: pauses.append(broker.linger)
    return pauses


@WAKING
def test_one_task_at_a_time_is_claimed_at_once(make):
    broker = make(poll=5)
    producer = make(broker.queue)
    pauses = _lingering(broker)
    assert broker.dequeue(timeout=0.2) == []  # in place: LISTEN on PostgreSQL
    for n in range(3):  # round trips: enqueue, take, acknowledge, enqueue...
        producer.enqueue(f"task {n}".encode())
        [got] = broker.dequeue(count=10, timeout=5)
        assert got.payload == f"task {n}".encode()
        broker.acknowledge(got.ack_id)
    assert pauses == [], "a consumer kept up with the enqueues: nothing to wait for"


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_a_notification_of_a_task_already_taken_is_no_stream(make):
    # A claim can see a committed row before its NOTIFY reaches the listener: that
    # notification is read at the next dequeue, beside the one of the next task.
    broker = make(poll=5)
    producer = make(broker.queue)
    pauses = _lingering(broker)
    assert broker.dequeue(timeout=0.2) == []  # LISTEN in place
    producer.enqueue(b"taken early")
    [early] = broker._claim(10)  # before its notification was read
    broker.acknowledge(early.ack_id)
    producer.enqueue(b"next")
    time.sleep(0.2)  # both notifications have reached the listener
    [got] = broker.dequeue(count=10, timeout=5)
    assert got.payload == b"next"
    assert pauses == [], "one fresh notification and one stale: claimed at once"

@WAKING
def test_while_tasks_keep_coming_a_batch_gathers_before_the_claim(make):
    broker = make(poll=5)
    producer = make(broker.queue)
    pauses = _lingering(broker)
    assert broker.dequeue(timeout=0.2) == []
    for round_ in range(2):  # tasks arrive faster than the consumer takes them
        sent = [f"{round_}-{n}".encode() for n in range(3)]
        for payload in sent:
            producer.enqueue(payload)
        time.sleep(0.2)  # PostgreSQL delivers a NOTIFY after the commit returned
        got = broker.dequeue(count=10, timeout=5)
        assert [m.payload for m in got] == sent
        broker.acknowledge_many(m.ack_id for m in got)
    assert pauses and set(pauses) == {broker.linger}, "a claim waited for a batch to gather"
    streamed = len(pauses)
    assert broker.dequeue(count=10, timeout=0.2) == []  # the stream ends
    producer.enqueue(b"alone")
    assert [m.payload for m in broker.dequeue(count=10, timeout=5)] == [b"alone"]
    assert len(pauses) <= streamed + 1, "once the stream ended, a task is claimed at once"


# --------------------------------------------------------------------------- delays


#: The delay of these tests (seconds).
DELAY = 1.5


def _how_it_waits(broker, database):
    """What woke ``broker`` in its last wait: its way of waiting on ``database``."""
    if database == "postgres":
        assert broker._listener is not None, "it polled instead of listening"
    elif database == "default":
        assert broker.capabilities.blocking, "no doorbell for this SQLite file"
    else:
        assert not broker.capabilities.blocking  # MariaDB: polled


def _waiting(database, make):
    """A consumer that only learning when a row falls due can wake in time: on
    PostgreSQL and SQLite its recheck is far off (MariaDB polls every ``poll``)."""
    if database == "mysql":
        return make()
    broker = make(poll=30)
    broker.recheck_interval = 30
    return broker


@pytest.mark.parametrize("when", ["before the wait", "during the wait"])
def test_a_waiting_consumer_takes_a_delayed_message_when_due(make, database, when):
    """PostgreSQL listening, SQLite ringing, MariaDB polling: one dequeue returns a
    delayed message once due — not before, nor at its timeout. Enqueued during the
    wait, its NOTIFY (doorbell) finds nothing to take: the consumer learns then when
    it falls due."""
    broker = _waiting(database, make)
    producer = make(broker.queue)
    enqueued = time.monotonic()
    if when == "before the wait":
        producer.enqueue(b"due", delay=DELAY)
    else:
        assert broker.dequeue(timeout=0.2) == []  # LISTEN / the doorbell in place
        enqueued = time.monotonic() + 0.3
        later(0.3, lambda: producer.enqueue(b"due", delay=DELAY))
    got = broker.dequeue(timeout=60)
    taken = time.monotonic() - enqueued
    assert [m.payload for m in got] == [b"due"]
    assert taken >= DELAY - 0.05, f"taken {taken:.2f} s after a delay of {DELAY} s"
    assert taken < DELAY + 2, f"taken {taken:.2f} s after a delay of {DELAY} s: not when due"
    _how_it_waits(broker, database)


def test_a_waiting_consumer_takes_a_redelivery_when_the_receipt_runs_out(make, database):
    broker = _waiting(database, make)
    broker.config = Config.from_dict({"retry": 1, "poll": broker.config.poll})
    broker.enqueue(b"never acknowledged")
    [taken] = broker.dequeue()
    took = time.monotonic()
    got = broker.dequeue(timeout=60)
    assert [m.payload for m in got] == [b"never acknowledged"]
    assert got[0].deliveries == taken.deliveries + 1
    assert time.monotonic() - took < 1 + 2


def test_next_due_is_the_earliest_row_not_due_of_any_priority(make, database):
    from django.db import connections

    broker = make()
    conn = connections[database]

    def next_due():
        return broker.dialect.next_due(conn, broker.queue)

    assert next_due() is None
    broker.enqueue(b"in a minute", delay=60, priority=5)
    broker.enqueue(b"in 20 s", delay=20, priority=-5)
    broker.enqueue(b"in 40 s", delay=40)
    assert 15 < next_due() <= 20
    broker.enqueue(b"now", priority=-10)
    assert next_due() <= 0
    [taken] = broker.dequeue(count=5)
    assert taken.payload == b"now" and 15 < next_due() <= 20  # its receipt: in 30 s


def test_delayed_rows_wait_in_the_table(make, database):
    """A delayed message is a row: not waiting (queue_size), not in flight, in the
    table with its due time; zero delay is an ordinary enqueue."""
    from django.utils import timezone
    from qhive_broker_orm.models import QueuedTask

    broker = make()
    before = timezone.now()
    broker.enqueue(b"in a minute", delay=60)
    broker.enqueue(b"now", delay=0)
    assert broker.queue_size() == 1 and broker.lock_size() == 0
    rows = {bytes(r.payload): r for r in QueuedTask.objects.using(database).of_queue(broker.queue)}
    delayed, plain = rows[b"in a minute"], rows[b"now"]
    assert 55 < (delayed.visible_at - before).total_seconds() < 65, delayed.visible_at
    assert delayed.created <= plain.created and not delayed.in_flight
    assert plain.visible_at == plain.created and plain.priority == delayed.priority == 0
    [message] = broker.dequeue(count=5)
    assert message.payload == b"now"
    assert broker.queue_size() == 0 and broker.lock_size() == 1


def test_release_with_a_delay(make, database):
    from django.utils import timezone
    from qhive_broker_orm.models import QueuedTask

    broker = make()
    broker.enqueue(b"retry later", priority=3)
    [taken] = broker.dequeue()
    broker.release(taken.ack_id, delay=60)
    row = QueuedTask.objects.using(database).get(pk=int(taken.ack_id))
    assert 55 < (row.visible_at - timezone.now()).total_seconds() < 65
    assert row.deliveries == 1 and row.priority == 3
    assert broker.dequeue(count=5) == [] and broker.queue_size() == 0
    broker.release(taken.ack_id)  # no delay: back in its place at once
    [again] = broker.dequeue()
    assert again.ack_id == taken.ack_id and again.deliveries == 2


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"delay": -1}, ValueError, r"ORM broker: delay must be a finite number of seconds >= 0, "
                                r"got -1"),
    ({"delay": float("nan")}, ValueError, "ORM broker: delay"),
    ({"delay": float("inf")}, ValueError, "ORM broker: delay"),
    ({"delay": "5"}, TypeError, r"ORM broker: delay must be a number of seconds, got str '5'"),
    ({"delay": True}, TypeError, "ORM broker: delay"),
    ({"priority": 11}, ValueError, r"ORM broker: priority must be from -10 to 10 \(higher first\)"),
    ({"priority": -11}, ValueError, "ORM broker: priority"),
    ({"priority": 1.0}, TypeError, r"ORM broker: priority must be an int from -10 to 10, "
                                   r"got float"),
    ({"priority": True}, TypeError, "ORM broker: priority"),
])
def test_delay_and_priority_are_checked(make, options, error, match):
    broker = make()
    with pytest.raises(error, match=match):
        broker.enqueue(b"x", **options)
    if "delay" in options:
        with pytest.raises(error, match=match):
            broker.release("1", delay=options["delay"])
    assert broker.queue_size() == 0


def test_capabilities_declare_delay_and_priority(make):
    assert OrmBroker.capabilities.delay and OrmBroker.capabilities.priority
    assert make().capabilities.delay and make().capabilities.priority


# --------------------------------------------------------------------------- priorities


def test_bulk_claims_take_the_highest_priorities_in_order(make, database):
    broker = make()
    broker.enqueue_many([b"p0-a", b"p0-b"])
    sent = [(b"p5-a", 5), (b"m3-a", -3), (b"p10", 10), (b"p5-b", 5), (b"p0-c", 0),
            (b"m10", -10), (b"m3-b", -3), (b"p5-c", 5)]
    for payload, priority in sent:
        broker.enqueue(payload, priority=priority)
    broker.enqueue_many([b"p0-d"])
    expected = [b"p10", b"p5-a", b"p5-b", b"p5-c", b"p0-a", b"p0-b", b"p0-c", b"p0-d",
                b"m3-a", b"m3-b", b"m10"]
    batches = [[m.payload for m in broker.dequeue(count=3)] for _ in range(4)]
    assert batches == [expected[0:3], expected[3:6], expected[6:9], expected[9:]]
    assert broker.dequeue(count=3) == []


def test_a_higher_priority_goes_before_older_messages_but_not_before_due(make):
    broker = make()
    broker.enqueue(b"old")
    broker.enqueue(b"urgent, later", delay=60, priority=10)
    broker.enqueue(b"urgent", priority=1)
    assert [m.payload for m in broker.dequeue(count=5)] == [b"urgent", b"old"]


# --------------------------------------------------------------------------- the schema


def test_the_migration_made_the_priority_column_and_the_claim_index(make, database):
    """The suite's project migrated every database; this one looks at what it made."""
    from django.db import connections
    from django.utils import timezone

    conn = connections[database]
    with conn.cursor() as cursor:
        columns = {c.name: c for c in conn.introspection.get_table_description(cursor, QUEUE_TABLE)}
        constraints = conn.introspection.get_constraints(cursor, QUEUE_TABLE)
    assert "priority" in columns and not columns["priority"].null_ok
    claim = constraints["qhive_queued_task_claim_prio"]
    assert claim["index"] and claim["columns"] == ["queue", "priority", "visible_at", "id"]
    assert claim["orders"] == ["ASC", "DESC", "ASC", "ASC"]
    assert "qhive_queued_task_claim" not in constraints, "the old claim index is still there"
    # The column's database default: an INSERT that leaves it out (a broker of the
    # previous release, during a rolling upgrade) queues at priority 0.
    broker = make()
    now = conn.ops.adapt_datetimefield_value(timezone.now())
    with conn.cursor() as cursor:
        cursor.execute(f"INSERT INTO {QUEUE_TABLE} (queue, payload, visible_at, deliveries,"
                       f" created) VALUES (%s, %s, %s, 0, %s)", [broker.queue, b"old", now, now])
    broker.enqueue(b"new", priority=-1)
    assert [m.payload for m in broker.dequeue(count=2)] == [b"old", b"new"]


def test_the_migration_goes_back_and_forth_with_rows_queued(make, database):
    """0002 adds the column to the rows already queued (priority 0) and swaps the
    index; unapplied, the broker's tables are 0001's again."""
    from django.core.management import call_command
    from django.db import connections
    from django.utils import timezone

    broker = make()
    try:
        call_command("migrate", "qhive_broker_orm", "0001", database=database, verbosity=0)
        conn = connections[database]
        with conn.cursor() as cursor:
            constraints = conn.introspection.get_constraints(cursor, QUEUE_TABLE)
            columns = [c.name for c in conn.introspection.get_table_description(cursor,
                                                                                QUEUE_TABLE)]
            now = conn.ops.adapt_datetimefield_value(timezone.now())
            cursor.execute(f"INSERT INTO {QUEUE_TABLE} (queue, payload, visible_at, deliveries,"
                           f" created) VALUES (%s, %s, %s, 0, %s)",
                           [broker.queue, b"queued before", now, now])
        assert "priority" not in columns and "qhive_queued_task_claim" in constraints
    finally:
        call_command("migrate", "qhive_broker_orm", database=database, verbosity=0)
    broker.enqueue(b"urgent", priority=2)
    assert [m.payload for m in broker.dequeue(count=5)] == [b"urgent", b"queued before"]


def _plan_nodes(plan):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


@POSTGRES
def test_the_claim_reads_the_index_in_order_without_sorting(make, database):
    """With 10,000 rows due, of several priorities, the claim's plan is an index scan
    of the claim index that stops after ``count`` rows: no Sort of every row due."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    broker = make()
    broker.enqueue_many([f"{n}".encode() for n in range(9_000)])
    for n in range(1_000):
        broker.enqueue(f"p{n}".encode(), priority=n % 7 - 3)
    broker.enqueue(b"in flight")
    conn = connections[database]
    with conn.cursor() as cursor:
        cursor.execute(f"ANALYZE {QUEUE_TABLE}")
    with CaptureQueriesContext(conn) as captured:
        got = broker.dequeue(count=10)
    assert [m.payload for m in got] == [f"p{n}".encode() for n in range(6, 70, 7)]
    [claim] = [q["sql"] for q in captured.captured_queries if "SKIP LOCKED" in q["sql"]]
    with conn.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {claim}")
        [[plan]] = cursor.fetchone()
    nodes = list(_plan_nodes(plan["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name") == QUEUE_TABLE and "Scan" in n["Node Type"]]
    assert {n.get("Index Name") for n in scans} >= {"qhive_queued_task_claim_prio"}, plan
    claim_scan = next(n for n in scans if n.get("Index Name") == "qhive_queued_task_claim_prio")
    assert claim_scan["Node Type"] == "Index Scan", plan
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort")], plan
