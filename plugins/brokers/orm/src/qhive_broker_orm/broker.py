"""``OrmBroker``: the task queue in a table of a Django database.

One row of ``qhive_queued_task`` per message. ``visible_at`` (Django Q2's
``lock``) says when a message may be taken: enqueue sets it to now, a claim to
now + ``retry``, so a message that is never acknowledged comes back after
``retry`` seconds; acknowledging deletes the row.

Claims are atomic and take up to ``count`` rows in one go, in queue order
(``visible_at``, then ``id``):

* **PostgreSQL** — one statement: a ``SELECT … FOR UPDATE SKIP LOCKED`` CTE
  feeding an ``UPDATE … RETURNING``. Concurrent clusters skip each other's rows
  instead of waiting for them. Enqueue sends ``pg_notify`` (delivered at
  commit), and an idle ``dequeue(timeout=…)`` sleeps on a dedicated
  ``LISTEN`` connection, so a new message wakes it within milliseconds.
* **MariaDB / MySQL** — ``START TRANSACTION``; ``SELECT … FOR UPDATE SKIP
  LOCKED``; ``UPDATE``; ``COMMIT``.
* **SQLite** — one ``UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING``
  statement, atomic under SQLite's write lock (``BEGIN IMMEDIATE`` + SELECT +
  UPDATE on SQLite < 3.35).

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
import datetime as dt
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.utils import ConnectionDoesNotExist, InterfaceError, OperationalError
from django.db.utils import Error as DatabaseError
from django.utils import timezone
from qhive.contracts import Broker, Capabilities, Message
from qhive.errors import BrokerConnectionError, BrokerError, ConfigError, SetupError

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from qhive.config import Config

__all__ = ["QUEUE_TABLE", "STAT_TABLE", "MissingTableError", "OrmBroker"]

T = TypeVar("T")
logger = logging.getLogger("qhive.broker.orm")

#: The tables of :mod:`qhive_broker_orm.models` (the broker does not import the
#: models, so that it works before ``django.setup()``).
QUEUE_TABLE = "qhive_queued_task"
STAT_TABLE = "qhive_broker_stat"
#: ``QueuedTask.queue`` is a ``CharField(max_length=100)``.
MAX_QUEUE_NAME = 100
#: ``BrokerStat.key`` is a ``CharField(max_length=255)``.
MAX_STAT_KEY = 255

#: What the class promises whatever the database; an instance adds ``blocking``
#: on PostgreSQL (see :attr:`OrmBroker.capabilities`).
BASE_CAPABILITIES = Capabilities(
    receipts=True, bulk=True, blocking=False, fifo=True, stats=True, shared=True, touch=True
)

class MissingTableError(BrokerError, SetupError):
    """The broker's tables are not in the database: ``manage.py migrate`` is missing."""


def _payload(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"the ORM broker queues bytes, got {type(value).__name__}")


def _bytes(value: Any) -> bytes:
    return value if type(value) is bytes else bytes(value)


def _ack_id(ack_id: str) -> int:
    try:
        return int(ack_id)
    except (TypeError, ValueError):
        raise ValueError(f"{ack_id!r} is not an ORM broker ack id (a row id)") from None


def notify_channel(queue: str) -> str:
    """The PostgreSQL ``NOTIFY`` channel of a queue (identifiers stop at 63 bytes)."""
    channel = f"qhive_{queue}"
    if len(channel.encode()) > 63:
        channel = "qhive_" + hashlib.sha256(queue.encode()).hexdigest()[:40]
    return channel


class _CapabilitiesAttribute:
    """``OrmBroker.capabilities``: on the class, what every database gets; on an
    instance, with ``blocking=True`` when its database is PostgreSQL."""

    def __get__(self, broker: OrmBroker | None, owner: type | None = None) -> Capabilities:
        if broker is None:
            return BASE_CAPABILITIES
        return broker._capabilities


class _Listener:
    """A dedicated psycopg 3 connection LISTENing on one channel."""

    def __init__(self, params: dict[str, Any], channel: str) -> None:
        import psycopg
        from psycopg import sql

        self.pid = os.getpid()
        self.conn = psycopg.connect(**params, autocommit=True)
        try:
            self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except BaseException:
            self.close()
            raise

    def drain(self) -> None:
        """Forget notifications already received (no round-trip)."""
        for _ in self.conn.notifies(timeout=0):
            pass

    def wait(self, seconds: float) -> bool:
        """Sleep until a notification arrives or ``seconds`` pass; True if one came."""
        return any(True for _ in self.conn.notifies(timeout=seconds, stop_after=1))

    def close(self) -> None:
        if self.pid != os.getpid():
            # Inherited through fork: closing would end the parent's session.
            # Just drop it (psycopg never finishes a connection of another
            # process when collecting it).
            return
        with contextlib.suppress(Exception):
            self.conn.close()


class OrmBroker(Broker):
    """The ORM broker: a queue in the table ``qhive_queued_task`` of database ``orm``.

    :param queue: the queue (cluster name), at most 100 characters.
    :param config: the cluster's config (``retry``, ``poll``).
    :param orm: the alias of the database in ``settings.DATABASES`` — what
        Django Q2's ``Q_CLUSTER['orm']`` names.

    ``enqueue`` is a single INSERT on the caller's connection: inside a
    ``transaction.atomic(using=orm)`` block the message exists only if the
    block commits (and on PostgreSQL, waiting clusters are woken at commit).
    """

    capabilities = _CapabilitiesAttribute()  # type: ignore[assignment]

    #: An idle blocking dequeue on PostgreSQL still looks at the table this
    #: often (or every ``poll`` if longer): messages whose ``retry`` ran out
    #: come back without a notification.
    recheck_interval = 1.0
    #: ``get_stats`` deletes expired statistics at most this often.
    stats_sweep_interval = 60.0
    #: After a failed attempt to open the LISTEN connection, poll this long
    #: before trying again.
    listen_retry_interval = 30.0
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
        self.vendor = _vendor(orm)
        self.channel = notify_channel(queue)
        self._capabilities = Capabilities(
            receipts=True, bulk=True, blocking=self.vendor == "postgresql" and _has_psycopg3(),
            fifo=True, stats=True, shared=True, touch=True,
        )
        self._info: str | None = None
        self._init_local_state()

    def _init_local_state(self) -> None:
        self._listener: _Listener | None = None
        self._listener_lock = threading.Lock()
        self._listen_failed_at: float | None = None
        self._last_sweep = 0.0

    # -- pickling: connections stay behind

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_listener", "_listener_lock", "_listen_failed_at", "_last_sweep"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_local_state()

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
            if conn.in_atomic_block or self._retry_is_pointless(exc):
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

    def _retry_is_pointless(self, exc: Exception) -> bool:
        # SQLite's errors are about the file (locked past the busy timeout, not
        # found): a new connection would only fail again.
        return self.vendor == "sqlite" and isinstance(exc, OperationalError)

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
        if isinstance(exc, InterfaceError) or (
            isinstance(exc, OperationalError) and self.vendor != "sqlite"
        ):
            return BrokerConnectionError(message)
        return BrokerError(message)

    def _clock(self, conn: BaseDatabaseWrapper, offset: float = 0.0) -> tuple[str, list[Any]]:
        """SQL for "now + offset seconds" in the column's format, and its parameters.

        The database's clock where it keeps the column in UTC (one clock for
        every host of the cluster); the Python clock, adapted as Django would,
        otherwise (SQLite, or MySQL storing local times).
        """
        if self.vendor == "postgresql":
            return ("now() + %s * interval '1 second'", [offset]) if offset else ("now()", [])
        if self.vendor == "mysql" and settings.USE_TZ and conn.timezone_name == "UTC":
            if offset:
                return "UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND", [round(offset * 1e6)]
            return "UTC_TIMESTAMP(6)", []
        value = timezone.now()
        if offset:
            value += dt.timedelta(seconds=offset)
        return "%s", [conn.ops.adapt_datetimefield_value(value)]

    # -- enqueue

    def enqueue(self, payload: bytes) -> str:
        payload = _payload(payload)
        return self._run(lambda conn: self._insert(conn, [payload])[0], "enqueue")

    def enqueue_many(self, payloads: Iterable[bytes]) -> list[str]:
        batch = [_payload(p) for p in payloads]
        if not batch:
            return []
        chunks = self._chunks(batch)

        def work(conn: BaseDatabaseWrapper) -> list[str]:
            if len(chunks) == 1:
                return self._insert(conn, chunks[0])
            with transaction.atomic(using=self.alias):
                return [i for chunk in chunks for i in self._insert(conn, chunk)]

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

    def _insert(self, conn: BaseDatabaseWrapper, payloads: list[bytes]) -> list[str]:
        """INSERT the payloads in one statement; their ids in order, as strings."""
        now_sql, now_params = self._clock(conn)
        row = f"(%s, %s, {now_sql}, 0, {now_sql})"
        params: list[Any] = []
        for payload in payloads:
            params += [self.queue, payload, *now_params, *now_params]
        sql = (f"INSERT INTO {QUEUE_TABLE} (queue, payload, visible_at, deliveries, created) "
               f"VALUES {', '.join([row] * len(payloads))}")
        with conn.cursor() as cursor:
            if self.vendor == "postgresql":
                # Waiting clusters are woken when this commits; identical
                # notifications of one transaction are folded into one.
                cursor.execute(f"{sql} RETURNING id, pg_notify(%s, '')", [*params, self.channel])
                return [str(i) for i in sorted(r[0] for r in cursor.fetchall())]
            if len(payloads) == 1:
                cursor.execute(sql, params)
                return [str(cursor.lastrowid)]
            if conn.features.can_return_rows_from_bulk_insert:
                cursor.execute(f"{sql} RETURNING id", params)
                return [str(i) for i in sorted(r[0] for r in cursor.fetchall())]
        # MySQL (not MariaDB): no RETURNING; one INSERT per row, all or nothing.
        with transaction.atomic(using=self.alias):
            return [i for p in payloads for i in self._insert(conn, [p])]

    # -- dequeue

    def dequeue(self, count: int = 1, timeout: float = 0.0) -> list[Message]:
        count = max(1, int(count))
        timeout = max(float(timeout or 0.0), 0.0)
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
        while True:
            try:
                listener.drain()  # what arrives from now on is news
            except Exception as exc:
                self._listener_failed(exc)
                return self._poll(lambda: self._claim(count), deadline - time.monotonic())
            got = self._claim(count)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0:
                return got
            try:
                listener.wait(min(remaining, recheck))
            except Exception as exc:
                self._listener_failed(exc)
                return self._poll(lambda: self._claim(count), deadline - time.monotonic())

    def _listen(self) -> _Listener | None:
        """The LISTEN connection, opened on first use; None if it cannot be opened."""
        if (listener := self._own_listener()) is not None:
            return listener
        if (self._listen_failed_at is not None
                and time.monotonic() - self._listen_failed_at < self.listen_retry_interval):
            return None
        try:
            self._listener = _Listener(self._listen_params(), self.channel)
        except Exception as exc:
            self._listen_failed_at = time.monotonic()
            logger.warning(
                "ORM broker: cannot LISTEN on database %r (%s: %s); polling every %s s instead",
                self.alias, type(exc).__name__, exc, self.config.poll,
            )
            return None
        self._listen_failed_at = None
        return self._listener

    def _own_listener(self) -> _Listener | None:
        """The LISTEN connection, unless it was inherited through fork (then dropped)."""
        listener = self._listener
        if listener is not None and listener.pid != os.getpid():
            listener.close()  # abandons it: the socket is the parent's
            listener = self._listener = None
        return listener

    def _listen_params(self) -> dict[str, Any]:
        params = dict(connections[self.alias].get_connection_params())
        for key in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(key, None)
        params.setdefault("connect_timeout", 10)
        params.setdefault("application_name", "qhive-listen")
        return params

    def _listener_failed(self, exc: Exception) -> None:
        logger.warning("ORM broker: the LISTEN connection to %r failed (%s: %s); reconnecting",
                       self.alias, type(exc).__name__, exc)
        self._close_listener()

    def _claim(self, count: int) -> list[Message]:
        claim = {"postgresql": self._claim_postgresql, "mysql": self._claim_mysql}.get(
            self.vendor, self._claim_sqlite
        )
        return self._run(lambda conn: claim(conn, count), "dequeue")

    def _claim_postgresql(self, conn: BaseDatabaseWrapper, count: int) -> list[Message]:
        # MATERIALIZED: the locking SELECT runs exactly once, before the UPDATE.
        sql = (
            f"WITH claimed AS MATERIALIZED ("
            f" SELECT id, visible_at FROM {QUEUE_TABLE}"
            f" WHERE queue = %s AND visible_at <= now()"
            f" ORDER BY visible_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
            f" UPDATE {QUEUE_TABLE} AS q"
            f" SET visible_at = now() + %s * interval '1 second', deliveries = q.deliveries + 1"
            f" FROM claimed WHERE q.id = claimed.id"
            f" RETURNING q.id, q.payload, q.deliveries, claimed.visible_at"
        )
        with conn.cursor() as cursor:
            cursor.execute(sql, [self.queue, count, float(self.config.retry)])
            rows = cursor.fetchall()
        rows.sort(key=lambda r: (r[3], r[0]))  # RETURNING has no order
        return [Message(str(i), _bytes(p), d) for i, p, d, _ in rows]

    def _claim_mysql(self, conn: BaseDatabaseWrapper, count: int) -> list[Message]:
        now_sql, now_params = self._clock(conn)
        until_sql, until_params = self._clock(conn, float(self.config.retry))
        # MariaDB < 10.6 cannot skip: claims then wait for each other (still atomic).
        skip = " SKIP LOCKED" if conn.features.has_select_for_update_skip_locked else ""
        select = (f"SELECT id, payload, deliveries FROM {QUEUE_TABLE}"
                  f" WHERE queue = %s AND visible_at <= {now_sql}"
                  f" ORDER BY visible_at, id LIMIT %s FOR UPDATE{skip}")
        with conn.cursor() as cursor, _transaction(conn, cursor, "START TRANSACTION"):
            cursor.execute(select, [self.queue, *now_params, count])
            rows = cursor.fetchall()
            if rows:
                ids = [r[0] for r in rows]
                cursor.execute(
                    f"UPDATE {QUEUE_TABLE} SET visible_at = {until_sql},"
                    f" deliveries = deliveries + 1"
                    f" WHERE id IN ({', '.join(['%s'] * len(ids))})",
                    [*until_params, *ids],
                )
        return [Message(str(i), _bytes(p), d + 1) for i, p, d in rows]

    def _claim_sqlite(self, conn: BaseDatabaseWrapper, count: int) -> list[Message]:
        now = timezone.now()
        now_param = conn.ops.adapt_datetimefield_value(now)
        until_param = conn.ops.adapt_datetimefield_value(
            now + dt.timedelta(seconds=float(self.config.retry)))
        candidates = (f"SELECT id FROM {QUEUE_TABLE} WHERE queue = %s AND visible_at <= %s"
                      f" ORDER BY visible_at, id LIMIT %s")
        update = (f"UPDATE {QUEUE_TABLE} SET visible_at = %s, deliveries = deliveries + 1"
                  f" WHERE id IN ({candidates})")
        params = [until_param, self.queue, now_param, count]
        if sqlite3.sqlite_version_info >= (3, 35):
            # One statement: it holds the write lock from its first read.
            with conn.cursor() as cursor:
                cursor.execute(f"{update} RETURNING id, payload, deliveries", params)
                rows = sorted(cursor.fetchall())
            return [Message(str(i), _bytes(p), d) for i, p, d in rows]
        with conn.cursor() as cursor, _transaction(conn, cursor, "BEGIN IMMEDIATE"):
            cursor.execute(
                f"SELECT id, payload, deliveries FROM {QUEUE_TABLE} WHERE id IN ({candidates})"
                f" ORDER BY visible_at, id", params[1:])
            rows = cursor.fetchall()
            cursor.execute(update, params)
        return [Message(str(i), _bytes(p), d + 1) for i, p, d in rows]

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
            later_sql, later_params = self._clock(conn, self.config.retry)
            now_sql, now_params = self._clock(conn)
            with conn.cursor() as cursor:
                for start in range(0, len(row_ids), self.insert_rows):
                    chunk = row_ids[start:start + self.insert_rows]
                    cursor.execute(
                        f"UPDATE {QUEUE_TABLE} SET visible_at = {later_sql} WHERE id IN "
                        f"({', '.join(['%s'] * len(chunk))}) AND visible_at > {now_sql}",
                        [*later_params, *chunk, *now_params])

        if row_ids:
            self._run(work, "touch")

    def release(self, ack_id: str) -> None:
        """Make a taken message available again at once, in its original place
        (``visible_at`` goes back to ``created``, the time of its enqueue)."""
        row_id = _ack_id(ack_id)

        def work(conn: BaseDatabaseWrapper) -> None:
            sql = f"UPDATE {QUEUE_TABLE} SET visible_at = created WHERE id = %s"
            with conn.cursor() as cursor:
                if self.vendor == "postgresql":
                    cursor.execute(f"{sql} RETURNING pg_notify(%s, '')", [row_id, self.channel])
                else:
                    cursor.execute(sql, [row_id])

        self._run(work, "release")

    # -- sizes and queues

    def _count(self, op: str, what: str) -> int:
        def work(conn: BaseDatabaseWrapper) -> int:
            now_sql, now_params = self._clock(conn)
            with conn.cursor() as cursor:
                cursor.execute(
                    f"SELECT COUNT(*) FROM {QUEUE_TABLE} WHERE queue = %s AND visible_at {op} "
                    f"{now_sql}", [self.queue, *now_params])
                return int(cursor.fetchone()[0])

        return self._run(work, what)

    def queue_size(self) -> int:
        return self._count("<=", "queue_size")

    def lock_size(self) -> int:
        return self._count(">", "lock_size")

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
            self._info = self._run(self._describe, "info")
        return self._info

    def _describe(self, conn: BaseDatabaseWrapper) -> str:
        if self.vendor == "postgresql":
            conn.ensure_connection()
            major, minor = divmod(conn.pg_version, 10000)
            version = f"postgresql {major}.{minor}"
        elif self.vendor == "mysql":
            name = "mariadb" if conn.mysql_is_mariadb else "mysql"
            version = f"{name} {'.'.join(map(str, conn.mysql_version))}"
        elif self.vendor == "sqlite":
            version = f"sqlite {sqlite3.sqlite_version}"
        else:
            version = self.vendor
        return f"ORM {self.alias} ({version})"

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
            until_sql, until_params = self._clock(conn, float(ttl))
            sql = (f"INSERT INTO {STAT_TABLE} ({q('key')}, {q('value')}, {q('expires')}) "
                   f"VALUES (%s, %s, {until_sql}) ")
            if self.vendor == "mysql":
                sql += (f"ON DUPLICATE KEY UPDATE {q('value')} = VALUES({q('value')}), "
                        f"{q('expires')} = VALUES({q('expires')})")
            else:
                sql += (f"ON CONFLICT ({q('key')}) DO UPDATE SET {q('value')} = "
                        f"EXCLUDED.{q('value')}, {q('expires')} = EXCLUDED.{q('expires')}")
            with conn.cursor() as cursor:
                cursor.execute(sql, [key, value, *until_params])

        self._run(work, "set_stat")

    def get_stat(self, key: str) -> bytes | None:
        key = _stat_key(key)

        def work(conn: BaseDatabaseWrapper) -> bytes | None:
            q = conn.ops.quote_name
            now_sql, now_params = self._clock(conn)
            with conn.cursor() as cursor:
                cursor.execute(
                    f"SELECT {q('key')}, {q('value')} FROM {STAT_TABLE} "
                    f"WHERE {q('key')} = %s AND {q('expires')} > {now_sql}", [key, *now_params])
                # A case-insensitive collation (MySQL) may match another key.
                return next((_bytes(v) for k, v in cursor.fetchall() if k == key), None)

        return self._run(work, "get_stat")

    def get_stats(self, prefix: str) -> list[bytes]:
        sweep = time.monotonic() - self._last_sweep >= self.stats_sweep_interval

        def work(conn: BaseDatabaseWrapper) -> list[bytes]:
            q = conn.ops.quote_name
            now_sql, now_params = self._clock(conn)
            pattern = (prefix.replace("|", "||").replace("%", "|%").replace("_", "|_")) + "%"
            with conn.cursor() as cursor:
                if sweep:
                    cursor.execute(f"DELETE FROM {STAT_TABLE} WHERE {q('expires')} <= {now_sql}",
                                   now_params)
                cursor.execute(
                    f"SELECT {q('key')}, {q('value')} FROM {STAT_TABLE} WHERE {q('key')} LIKE %s "
                    f"ESCAPE '|' AND {q('expires')} > {now_sql}", [pattern, *now_params])
                # LIKE may ignore case (SQLite, MySQL): compare exactly here.
                return [_bytes(v) for k, v in cursor.fetchall() if k.startswith(prefix)]

        found = self._run(work, "get_stats")
        if sweep:
            self._last_sweep = time.monotonic()
        return found


def _stat_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_STAT_KEY:
        raise ValueError(f"ORM broker stat keys are 1 to {MAX_STAT_KEY} characters, got {key!r}")
    return key


def _vendor(alias: str) -> str:
    """The vendor of database ``alias``, or a ConfigError saying what is wrong."""
    try:
        return connections[alias].vendor
    except ConnectionDoesNotExist:
        known = ", ".join(map(repr, settings.DATABASES)) or "none"
        raise ConfigError(
            f"the ORM broker's database {alias!r} (Q_CLUSTER['orm']) is not in "
            f"settings.DATABASES; databases: {known}", key="orm"
        ) from None
    except ImproperlyConfigured as exc:
        raise ConfigError(
            f"the ORM broker needs Django's settings (set DJANGO_SETTINGS_MODULE): {exc}",
            key="orm",
        ) from exc


def _has_psycopg3() -> bool:
    """psycopg >= 3.2 is installed (``Connection.notifies(timeout=...)``)."""
    try:
        import psycopg
    except ImportError:  # psycopg2: no LISTEN support here, the broker polls
        return False
    try:
        major, minor = (int(part) for part in psycopg.__version__.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (3, 2)


@contextlib.contextmanager
def _transaction(conn: BaseDatabaseWrapper, cursor: Any, begin: str) -> Iterator[None]:
    """A transaction opened by hand (``transaction.atomic()`` costs two more round
    trips); inside a caller's transaction, theirs is used and their COMMIT ends it."""
    own = conn.get_autocommit() and not conn.in_atomic_block
    if own:
        cursor.execute(begin)
    try:
        yield
    except BaseException:
        if own:
            with contextlib.suppress(Exception):
                cursor.execute("ROLLBACK")
        raise
    if own:
        cursor.execute("COMMIT")
