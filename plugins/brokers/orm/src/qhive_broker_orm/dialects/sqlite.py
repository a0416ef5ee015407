"""SQLite: claims atomic under the database's write lock, the Python clock.

* **Claim** — one ``UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING``
  statement, which holds the write lock from its first read; on SQLite < 3.35
  (no ``RETURNING``), ``BEGIN IMMEDIATE`` + SELECT + UPDATE. ``RETURNING`` gives
  the new ``visible_at`` only, so one claim's messages are listed by priority,
  then ``id`` (enqueue order): a batch that holds a redelivered or delayed message
  may list it before younger ones of its priority (the batch is still the right
  one).
* **Clock** — Python's (the default): SQLite stores times as text.
* **Errors** — an ``OperationalError`` is about the file (locked past the busy
  timeout, not found), not a connection: a new connection would only fail again.
* **Waking** — no NOTIFY: an insert or a release rings the queue's
  :mod:`~qhive_broker_orm.doorbell` when it commits; idle consumers sleep on it
  (a consumer woken by a delayed one learns when it falls due).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import sqlite3
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.utils import InterfaceError
from django.utils import timezone
from qhive.contracts import Message

from qhive_broker_orm.dialects.base import QUEUE_TABLE, Dialect, as_bytes, own_transaction
from qhive_broker_orm.doorbell import Doorbell, doorbell_of

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["SQLite"]


class SQLite(Dialect):
    vendor = "sqlite"
    display_name = "SQLite"

    def claim(self, conn: BaseDatabaseWrapper, queue: str, count: int,
              retry: float) -> list[Message]:
        now = timezone.now()
        now_param = conn.ops.adapt_datetimefield_value(now)
        until_param = conn.ops.adapt_datetimefield_value(now + dt.timedelta(seconds=retry))
        candidates = (f"SELECT id FROM {QUEUE_TABLE} WHERE queue = %s AND visible_at <= %s"
                      f" ORDER BY priority DESC, visible_at, id LIMIT %s")
        update = (f"UPDATE {QUEUE_TABLE} SET visible_at = %s, deliveries = deliveries + 1"
                  f" WHERE id IN ({candidates})")
        params = [until_param, queue, now_param, count]
        if sqlite3.sqlite_version_info >= (3, 35):
            # One statement: it holds the write lock from its first read.
            with conn.cursor() as cursor:
                cursor.execute(f"{update} RETURNING id, payload, deliveries, priority", params)
                rows = sorted(cursor.fetchall(), key=lambda r: (-r[3], r[0]))
            return [Message(str(i), as_bytes(p), d) for i, p, d, _ in rows]
        with conn.cursor() as cursor, own_transaction(conn, cursor, "BEGIN IMMEDIATE"):
            cursor.execute(
                f"SELECT id, payload, deliveries FROM {QUEUE_TABLE} WHERE id IN ({candidates})"
                f" ORDER BY priority DESC, visible_at, id", params[1:])
            rows = cursor.fetchall()
            cursor.execute(update, params)
        return [Message(str(i), as_bytes(p), d + 1) for i, p, d in rows]

    def describe(self, conn: BaseDatabaseWrapper) -> str:
        return f"sqlite {sqlite3.sqlite_version}"

    def insert(self, conn: BaseDatabaseWrapper, queue: str, payloads: list[bytes], *,
               delay: float = 0.0, priority: int = 0) -> list[str]:
        ids = super().insert(conn, queue, payloads, delay=delay, priority=priority)
        self.wake(conn, queue, len(ids))
        return ids

    def release(self, conn: BaseDatabaseWrapper, queue: str, row_id: int,
                delay: float = 0.0) -> None:
        super().release(conn, queue, row_id, delay)
        self.wake(conn, queue, 1)

    def wake(self, conn: BaseDatabaseWrapper, queue: str, messages: int | None = None) -> None:
        """Ring the queue's doorbell at commit (at once outside a transaction): one
        sleeping consumer per message, or all."""
        if (bell := self.doorbell(conn, queue)) is None:
            return
        if conn.in_atomic_block:
            transaction.on_commit(lambda: bell.ring(messages), using=conn.alias)
        else:
            bell.ring(messages)

    def doorbell(self, conn: BaseDatabaseWrapper, queue: str) -> Doorbell | None:
        return doorbell_of(conn, _bell_name(queue))

    def connection_failed(self, exc: Exception) -> bool:
        return isinstance(exc, InterfaceError)


@functools.lru_cache(maxsize=64)
def _bell_name(queue: str) -> str:
    """A directory name for any queue name (they may hold slashes)."""
    return f"queue-{hashlib.sha256(queue.encode()).hexdigest()[:16]}"
