"""``OrmBroker``: the task queue in a table of a Django database.

One row of ``qhive_queued_task`` per message. ``visible_at`` (Django Q2's
``lock``) says when a message may be taken: enqueue sets it to now (now + ``delay``
for a delayed one), a claim to now + ``retry``, so a message that is never
acknowledged comes back after ``retry`` seconds; acknowledging deletes the row.

Claims are atomic and take up to ``count`` rows in one go: the highest ``priority``
first, then in queue order (``visible_at``, then ``id``). This module holds what
every database shares; how each one claims, inserts, keeps time and wakes consumers
is its dialect (:mod:`qhive_broker_orm.dialects`). Where they can be woken
(PostgreSQL, psycopg 3; a SQLite file), an idle ``dequeue(timeout=…)`` sleeps on a
:class:`~qhive_broker_orm.listen.Listener` (or the doorbell), so a new message wakes
it within milliseconds; before it sleeps, it asks when the queue's next row falls
due (:meth:`~qhive_broker_orm.dialects.base.Dialect.next_due`: a delayed message, a
receipt running out) and sleeps no longer than that — nothing notifies those.

Everything goes through Django's connection for the database alias (``orm``),
with raw SQL: one round-trip per call where the database allows it, and no
dependency on the app registry, so an unpickled broker works in a fresh
process that only has ``DJANGO_SETTINGS_MODULE``. There is no
``close_old_connections()`` per call (Django Q2 runs one on every call):
a connection error outside a transaction closes the connection and retries
the call once; what still fails raises :class:`qhive.errors.BrokerError`
(:class:`~qhive.errors.BrokerConnectionError` for connection failures).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.utils import Error as DatabaseError
from django.db.utils import InterfaceError, OperationalError
from qhive.contracts import Broker, Capabilities, Message, ProcessLocal, checked_delivery
from qhive.errors import BrokerConnectionError, BrokerError, ConfigError, SetupError

from qhive_broker_orm.dialects import Dialect, dialect_for
from qhive_broker_orm.dialects.base import QUEUE_TABLE, STAT_TABLE, as_bytes
from qhive_broker_orm.doorbell import Doorbell
from qhive_broker_orm.listen import Listener, notify_channel

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from qhive.config import Config

__all__ = ["QUEUE_TABLE", "STAT_TABLE", "MissingTableError", "OrmBroker", "notify_channel"]

T = TypeVar("T")
logger = logging.getLogger("qhive.broker.orm")

#: ``QueuedTask.queue`` is a ``CharField(max_length=100)``.
MAX_QUEUE_NAME = 100
#: ``BrokerStat.key`` is a ``CharField(max_length=255)``.
MAX_STAT_KEY = 255
#: Tasks keep coming when this many arrived while a consumer was busy (PostgreSQL:
#: notifications, plus one that may be stale; SQLite: the messages of its last claim).
#: Sequential round trips (enqueue, wait for the result, enqueue) never reach it.
STREAM = 2

#: What the class promises whatever the database; an instance adds ``blocking``
#: on PostgreSQL (see :attr:`OrmBroker.capabilities`).
BASE_CAPABILITIES = Capabilities(
    receipts=True, bulk=True, blocking=False, fifo=True, stats=True, shared=True, touch=True,
    delay=True, priority=True,
)


#: How the broker names itself in errors.
PLUGIN = "ORM broker"


class MissingTableError(BrokerError, SetupError):
    """The broker's tables are not in the database: ``manage.py migrate`` is missing."""


def _payload(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"the ORM broker queues bytes, got {type(value).__name__}")


def _ack_id(ack_id: str) -> int:
    try:
        return int(ack_id)
    except (TypeError, ValueError):
        raise ValueError(f"{ack_id!r} is not an ORM broker ack id (a row id)") from None


class _CapabilitiesAttribute:
    """``OrmBroker.capabilities``: on the class, what every database gets; on an
    instance, with ``blocking=True`` when its database is PostgreSQL."""

    def __get__(self, broker: OrmBroker | None, owner: type | None = None) -> Capabilities:
        if broker is None:
            return BASE_CAPABILITIES
        return broker._capabilities


class OrmBroker(ProcessLocal, Broker):
    """The ORM broker: a queue in the table ``qhive_queued_task`` of database ``orm``.

    :param queue: the queue (cluster name), at most 100 characters.
    :param config: the cluster's config (``retry``, ``poll``).
    :param orm: the alias of the database in ``settings.DATABASES`` — what
        Django Q2's ``Q_CLUSTER['orm']`` names.

    ``enqueue`` is a single INSERT on the caller's connection: inside a
    ``transaction.atomic(using=orm)`` block the message exists only if the
    block commits (and on PostgreSQL, waiting clusters are woken at commit).
    ``delay=`` and ``priority=`` are columns of that row: a delayed message survives
    every cluster's restart, and keeps its priority when it is released or
    delivered again.
    """

    capabilities = _CapabilitiesAttribute()  # type: ignore[assignment]

    #: An idle blocking dequeue on PostgreSQL still looks at the table this
    #: often (or every ``poll`` if longer): messages whose ``retry`` ran out
    #: come back without a notification. It sleeps less when a row falls
    #: due sooner (:meth:`_idle_wait`).
    recheck_interval = 1.0
    #: The shortest sleep until a row falls due: one due already, that the claim
    #: did not take, is another claim's, or fell due between the two statements.
    due_floor = 0.05
    #: ``get_stats`` deletes expired statistics at most this often.
    stats_sweep_interval = 60.0
    #: After a failed attempt to open the LISTEN connection, poll this long
    #: before trying again.
    listen_retry_interval = 30.0
    #: While tasks keep coming, a blocking dequeue waits this long before it claims,
    #: so that a batch gathers (see :data:`STREAM`); one task at a time is claimed at once.
    linger = 0.005
    #: ``enqueue_many`` inserts at most this many rows / payload bytes per statement.
    insert_rows = 500
    insert_bytes = 4 << 20

    def __init__(
        self, queue: str = "default", *, config: Config | None = None,
        orm: str = DEFAULT_DB_ALIAS,
    ) -> None:
        super().__init__(queue, config=config)
        if not isinstance(queue, str) or not queue or len(queue) > MAX_QUEUE_NAME:
            raise ConfigError(
                f"ORM broker queue names are 1 to {MAX_QUEUE_NAME} characters, got {queue!r}",
                key="name",
            )
        if not isinstance(orm, str) or not orm:
            raise ConfigError(f"Q_CLUSTER['orm'] must be a database alias, got {orm!r}", key="orm")
        self.alias = orm
        self.dialect: Dialect = dialect_for(orm)
        self.vendor = self.dialect.vendor
        self.channel = notify_channel(queue)
        self._capabilities = dataclasses.replace(
            BASE_CAPABILITIES, blocking=self.dialect.can_listen() or self._doorbell() is not None)
        self._info: str | None = None
        self._init_local_state()

    #: Left behind by a pickled copy, which makes its own (ProcessLocal).
    local_state = ("_listener", "_listener_lock", "_listen_failed_at", "_last_sweep",
                   "_streaming", "_next_due")

    def _init_local_state(self) -> None:
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()
        self._listen_failed_at: float | None = None
        self._last_sweep = 0.0
        self._streaming = False
        #: When the queue's next row falls due as last asked (monotonic; inf: none
        #: will), None: to be asked (see :meth:`_idle_wait`).
        self._next_due: float | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} queue={self.queue!r} orm={self.alias!r}>"

    # -- running statements

    def _run(self, work: Callable[[BaseDatabaseWrapper], T], what: str) -> T:
        """Run ``work(connection)``; on a connection error outside a transaction,
        close the connection and run it once more. Database errors become
        :class:`BrokerError` (the cluster backs off on those)."""
        conn = connections[self.alias]
        try:
            return work(conn)
        except (OperationalError, InterfaceError) as exc:
            if conn.in_atomic_block or not self.dialect.connection_failed(exc):
                raise self._error(exc, what) from exc
            logger.info("ORM broker: %s on database %r failed (%s); reconnecting",
                        what, self.alias, exc)
            with contextlib.suppress(Exception):
                conn.close()
            conn.connection = None  # closed, even if close() failed half-way
        except DatabaseError as exc:
            raise self._error(exc, what) from exc
        try:
            return work(conn)
        except DatabaseError as exc:
            raise self._error(exc, what) from exc

    def _error(self, exc: Exception, what: str) -> BrokerError:
        text = str(exc).strip() or type(exc).__name__
        missing = ("no such table", "doesn't exist", "does not exist")
        if (QUEUE_TABLE in text or STAT_TABLE in text) and any(m in text for m in missing):
            return MissingTableError(
                f"ORM broker: {what} failed on database {self.alias!r}: {text}. Is "
                f"'qhive_broker_orm' in INSTALLED_APPS and did you run "
                f"'manage.py migrate --database {self.alias}'?"
            )
        message = f"ORM broker: {what} failed on database {self.alias!r} ({self.vendor}): {text}"
        if self.dialect.connection_failed(exc):
            return BrokerConnectionError(message)
        return BrokerError(message)

    # -- enqueue

    def enqueue(self, payload: bytes, *, delay: float = 0.0, priority: int = 0) -> str:
        """Queue ``payload``: taken in ``delay`` seconds at the earliest (the database's
        clock), before the messages of a lower ``priority`` (-10 to 10)."""
        payload = _payload(payload)
        delay, priority = checked_delivery(PLUGIN, delay, priority)
        return self._run(lambda conn: self.dialect.insert(
            conn, self.queue, [payload], delay=delay, priority=priority)[0], "enqueue")

    def enqueue_many(self, payloads: Iterable[bytes]) -> list[str]:
        batch = [_payload(p) for p in payloads]
        if not batch:
            return []
        chunks = self._chunks(batch)

        def work(conn: BaseDatabaseWrapper) -> list[str]:
            if len(chunks) == 1:
                return self.dialect.insert(conn, self.queue, chunks[0])
            with transaction.atomic(using=self.alias):
                return [i for chunk in chunks for i in self.dialect.insert(conn, self.queue, chunk)]

        return self._run(work, "enqueue_many")

    def _chunks(self, batch: list[bytes]) -> list[list[bytes]]:
        chunks: list[list[bytes]] = [[]]
        size = 0
        for payload in batch:
            if chunks[-1] and (
                len(chunks[-1]) >= self.insert_rows or size + len(payload) > self.insert_bytes
            ):
                chunks.append([])
                size = 0
            chunks[-1].append(payload)
            size += len(payload)
        return chunks

    # -- dequeue

    def dequeue(self, count: int = 1, timeout: float = 0.0) -> list[Message]:
        count = max(1, int(count))
        timeout = max(float(timeout or 0.0), 0.0)
        if timeout > 0 and (bell := self._doorbell()) is not None:
            return self._dequeue_ringing(bell, count, timeout)
        if timeout > 0 and self._capabilities.blocking and self._listener_lock.acquire(False):
            try:
                return self._dequeue_listening(count, timeout)
            finally:
                self._listener_lock.release()
        if self._listener is not None and self._listener_lock.acquire(False):
            # Not waiting this time: still read what arrived, so that unread
            # notifications do not pile up in the server's queue.
            try:
                if (listener := self._own_listener()) is not None:
                    listener.drain()
            except Exception as exc:
                self._listener_failed(exc)
            finally:
                self._listener_lock.release()
        # Other databases (and a second thread sharing this instance): poll.
        return self._poll(lambda: self._claim(count), timeout)

    def _dequeue_listening(self, count: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        listener = self._listen()
        if listener is None:
            return self._poll(lambda: self._claim(count), timeout)
        recheck = max(self.recheck_interval, self.config.poll)
        timed_out = False
        while True:
            try:
                arrived = listener.drain()  # what arrives from now on is news
                # One more than STREAM: a claim can see a committed row before its NOTIFY
                # reaches this connection, so one of these may be for a task already taken.
                if arrived > STREAM and timeout > self.linger:
                    # Tasks keep coming (several enqueues while this consumer was busy):
                    # let a batch gather. A claim per notification costs the consumers
                    # a claim, a save and an acknowledgement per task (measured: 0.9 ms
                    # of worker CPU per task, taken from the enqueuers on a busy host).
                    self._linger()
                    listener.drain()
            except Exception as exc:
                self._listener_failed(exc)
                return self._poll(lambda: self._claim(count), deadline - time.monotonic())
            got = self._claim(count)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0:
                return got
            # A delayed message was announced, or a sleep ran out (the recheck, a due
            # time): ask when the next row falls due. Woken by a plain enqueue another
            # consumer took, what it knew still holds (no statement per task).
            ask, listener.flagged = listener.flagged or timed_out, False
            try:
                timed_out = not listener.wait(self._idle_wait(min(remaining, recheck), ask=ask))
            except Exception as exc:
                self._listener_failed(exc)
                return self._poll(lambda: self._claim(count), deadline - time.monotonic())

    def _doorbell(self) -> Doorbell | None:
        return self.dialect.doorbell(connections[self.alias], self.queue)

    def _dequeue_ringing(self, bell: Doorbell, count: int, timeout: float) -> list[Message]:
        """SQLite. While tasks keep coming (the last claim took several), pause
        ``linger`` s before claiming: claims take the write lock the enqueuers need,
        and a claim per ring would take it once per message (measured: 39 % less
        drain), where a pause gathers a batch. Otherwise sleep until an enqueue
        rings, and claim at once: one task at a time is answered in milliseconds."""
        deadline = time.monotonic() + timeout
        if self._streaming and timeout > self.linger:
            self._linger()
            if got := self._claimed(count):
                return got
            self._streaming = False  # the stream ended: the next task is claimed at once
        try:
            sleeper = bell.sleeper()
        except OSError as exc:  # a read-only directory, say: poll, as before
            logger.debug("ORM broker: cannot sleep on %r (%s); polling", bell, exc)
            return self._poll(lambda: self._claim(count), deadline - time.monotonic())
        recheck = max(self.recheck_interval, self.config.poll)
        with sleeper:
            while True:
                got = self._claimed(count)  # after the sleeper is in place: no ring is missed
                now = time.monotonic()
                if got or now >= deadline:
                    return got
                sleeper.wait(self._idle_wait(min(deadline - now, recheck)))

    def _linger(self) -> None:
        time.sleep(self.linger)

    def _claimed(self, count: int) -> list[Message]:
        """:meth:`_claim`, noting whether tasks keep coming (see :meth:`_dequeue_ringing`)."""
        got = self._claim(count)
        if got:
            self._streaming = len(got) >= STREAM
        return got

    def _listen(self) -> Listener | None:
        """The LISTEN connection, opened on first use; None if it cannot be opened."""
        if (listener := self._own_listener()) is not None:
            return listener
        if (self._listen_failed_at is not None
                and time.monotonic() - self._listen_failed_at < self.listen_retry_interval):
            return None
        self._next_due = None  # what it learned may have changed unannounced
        try:
            self._listener = Listener(self._listen_params(), self.channel)
        except Exception as exc:
            self._listen_failed_at = time.monotonic()
            logger.warning(
                "ORM broker: cannot LISTEN on database %r (%s: %s); polling every %s s instead",
                self.alias, type(exc).__name__, exc, self.config.poll,
            )
            return None
        self._listen_failed_at = None
        return self._listener

    def _own_listener(self) -> Listener | None:
        """The LISTEN connection, unless it was inherited through fork (then dropped)."""
        listener = self._listener
        if listener is not None and listener.inherited:
            listener.close()  # abandons it: the socket is the parent's
            listener = self._listener = None
        return listener

    def _listen_params(self) -> dict[str, Any]:
        return Listener.connection_params(self.alias, application_name="qhive-listen")

    def _listener_failed(self, exc: Exception) -> None:
        logger.warning("ORM broker: the LISTEN connection to %r failed (%s: %s); reconnecting",
                       self.alias, type(exc).__name__, exc)
        self._close_listener()

    def _claim(self, count: int) -> list[Message]:
        retry = float(self.config.retry)
        return self._run(lambda conn: self.dialect.claim(conn, self.queue, count, retry),
                         "dequeue")

    def _idle_wait(self, limit: float, *, ask: bool = True) -> float:
        """How long a consumer whose claim found nothing sleeps: ``limit``, or less when
        a row of the queue falls due sooner (but ``due_floor`` at least). Nothing
        announces a receipt running out, so it asks (one statement, only before a
        sleep): when ``ask``, when it never did, and once the time it learned passed.
        A delayed message enqueued while it sleeps wakes it (NOTIFY, the doorbell),
        and it asks again."""
        if limit <= self.due_floor:
            return limit
        now = time.monotonic()
        if ask or self._next_due is None or self._next_due <= now:
            due = self._run(lambda conn: self.dialect.next_due(conn, self.queue), "dequeue")
            self._next_due = math.inf if due is None else now + max(due, self.due_floor)
        return min(limit, max(self._next_due - now, self.due_floor))

    # -- finishing messages

    def acknowledge(self, ack_id: str) -> None:
        row_id = _ack_id(ack_id)

        def work(conn: BaseDatabaseWrapper) -> None:
            with conn.cursor() as cursor:
                cursor.execute(f"DELETE FROM {QUEUE_TABLE} WHERE id = %s", [row_id])

        self._run(work, "acknowledge")

    def acknowledge_many(self, ack_ids: Iterable[str]) -> None:
        """Acknowledge several messages with one DELETE (an extension of the contract)."""
        row_ids = [_ack_id(a) for a in ack_ids]

        def work(conn: BaseDatabaseWrapper) -> None:
            with conn.cursor() as cursor:
                for start in range(0, len(row_ids), self.insert_rows):
                    chunk = row_ids[start:start + self.insert_rows]
                    cursor.execute(
                        f"DELETE FROM {QUEUE_TABLE} WHERE id IN ({', '.join(['%s'] * len(chunk))})",
                        chunk,
                    )

        if row_ids:
            self._run(work, "acknowledge_many")

    def touch(self, ack_ids: Iterable[str]) -> None:
        """Move the receipts of messages still in flight to ``retry`` seconds from now,
        in one UPDATE per chunk; messages whose receipt ran out keep their place."""
        row_ids = [_ack_id(a) for a in ack_ids]

        def work(conn: BaseDatabaseWrapper) -> None:
            later_sql, later_params = self.dialect.clock(conn, self.config.retry)
            now_sql, now_params = self.dialect.clock(conn)
            with conn.cursor() as cursor:
                for start in range(0, len(row_ids), self.insert_rows):
                    chunk = row_ids[start:start + self.insert_rows]
                    cursor.execute(
                        f"UPDATE {QUEUE_TABLE} SET visible_at = {later_sql} WHERE id IN "
                        f"({', '.join(['%s'] * len(chunk))}) AND visible_at > {now_sql}",
                        [*later_params, *chunk, *now_params])

        if row_ids:
            self._run(work, "touch")

    def release(self, ack_id: str, *, delay: float = 0.0) -> None:
        """Make a taken message available again at once, in its original place
        (``visible_at`` goes back to ``created``, the time of its enqueue); with a
        ``delay``, in that many seconds (a retry with a backoff). Its deliveries and
        its priority stay."""
        row_id = _ack_id(ack_id)
        delay, _ = checked_delivery(PLUGIN, delay)
        self._run(lambda conn: self.dialect.release(conn, self.queue, row_id, delay), "release")

    # -- sizes and queues

    def _count(self, condition: str, what: str) -> int:
        def work(conn: BaseDatabaseWrapper) -> int:
            now_sql, now_params = self.dialect.clock(conn)
            with conn.cursor() as cursor:
                cursor.execute(
                    f"SELECT COUNT(*) FROM {QUEUE_TABLE} WHERE queue = %s AND "
                    f"{condition.format(now=now_sql)}", [self.queue, *now_params])
                return int(cursor.fetchone()[0])

        return self._run(work, what)

    def queue_size(self) -> int:
        """Messages that may be taken now: delayed ones not yet due are not counted."""
        return self._count("visible_at <= {now}", "queue_size")

    def lock_size(self) -> int:
        """Messages taken and not yet back: a delayed one never taken is not in flight
        (one released with a delay counts until it falls due)."""
        return self._count("visible_at > {now} AND deliveries > 0", "lock_size")

    def purge_queue(self) -> None:
        def work(conn: BaseDatabaseWrapper) -> None:
            with conn.cursor() as cursor:
                cursor.execute(f"DELETE FROM {QUEUE_TABLE} WHERE queue = %s", [self.queue])

        self._run(work, "purge_queue")

    # -- lifecycle

    def ping(self) -> bool:
        """Reach the database and its queue table (a missing one: MissingTableError)."""
        def work(conn: BaseDatabaseWrapper) -> bool:
            with conn.cursor() as cursor:
                cursor.execute(f"SELECT 1 FROM {QUEUE_TABLE} WHERE 1 = 0")
                cursor.fetchall()
            return True

        try:
            return self._run(work, "ping")
        except (BrokerConnectionError, MissingTableError):
            raise
        except BrokerError as exc:
            raise BrokerConnectionError(str(exc)) from exc.__cause__

    def info(self) -> str:
        if self._info is None:
            version = self._run(self.dialect.describe, "info")
            self._info = f"ORM {self.alias} ({version})"
        return self._info

    def close(self) -> None:
        """Close the LISTEN connection. Django's connection stays: it is Django's."""
        self._close_listener()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    # -- statistics

    def set_stat(self, key: str, value: bytes, ttl: float) -> None:
        key = _stat_key(key)
        value = _payload(value)

        def work(conn: BaseDatabaseWrapper) -> None:
            q = conn.ops.quote_name
            until_sql, until_params = self.dialect.clock(conn, float(ttl))
            sql = (f"INSERT INTO {STAT_TABLE} ({q('key')}, {q('value')}, {q('expires')}) "
                   f"VALUES (%s, %s, {until_sql}) "
                   + self.dialect.upsert(conn, "key", ["value", "expires"]))
            with conn.cursor() as cursor:
                cursor.execute(sql, [key, value, *until_params])

        self._run(work, "set_stat")

    def get_stat(self, key: str) -> bytes | None:
        key = _stat_key(key)

        def work(conn: BaseDatabaseWrapper) -> bytes | None:
            q = conn.ops.quote_name
            now_sql, now_params = self.dialect.clock(conn)
            with conn.cursor() as cursor:
                cursor.execute(
                    f"SELECT {q('key')}, {q('value')} FROM {STAT_TABLE} "
                    f"WHERE {q('key')} = %s AND {q('expires')} > {now_sql}", [key, *now_params])
                # A case-insensitive collation (MySQL) may match another key.
                return next((as_bytes(v) for k, v in cursor.fetchall() if k == key), None)

        return self._run(work, "get_stat")

    def get_stats(self, prefix: str) -> list[bytes]:
        sweep = time.monotonic() - self._last_sweep >= self.stats_sweep_interval

        def work(conn: BaseDatabaseWrapper) -> list[bytes]:
            q = conn.ops.quote_name
            now_sql, now_params = self.dialect.clock(conn)
            pattern = (prefix.replace("|", "||").replace("%", "|%").replace("_", "|_")) + "%"
            with conn.cursor() as cursor:
                if sweep:
                    cursor.execute(f"DELETE FROM {STAT_TABLE} WHERE {q('expires')} <= {now_sql}",
                                   now_params)
                cursor.execute(
                    f"SELECT {q('key')}, {q('value')} FROM {STAT_TABLE} WHERE {q('key')} LIKE %s "
                    f"ESCAPE '|' AND {q('expires')} > {now_sql}", [pattern, *now_params])
                # LIKE may ignore case (SQLite, MySQL): compare exactly here.
                return [as_bytes(v) for k, v in cursor.fetchall() if k.startswith(prefix)]

        found = self._run(work, "get_stats")
        if sweep:
            self._last_sweep = time.monotonic()
        return found


def _stat_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_STAT_KEY:
        raise ValueError(f"ORM broker stat keys are 1 to {MAX_STAT_KEY} characters, got {key!r}")
    return key
