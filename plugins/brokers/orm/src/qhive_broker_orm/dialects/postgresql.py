"""PostgreSQL: one statement per operation, the database's clock, ``NOTIFY`` on writes.

* **Claim** — a ``SELECT … FOR UPDATE SKIP LOCKED`` CTE feeding an
  ``UPDATE … RETURNING``: concurrent clusters skip each other's rows instead
  of waiting for them. The CTE reads the claim index ``(queue, priority DESC,
  visible_at, id)`` in order and stops after ``count`` rows; rows not due are
  passed over in the index (``visible_at <= now()`` is an index condition).
* **Clock** — ``now()``: every host of a cluster uses the server's clock (the
  time its transaction started).
* **Waking** — an insert or a release sends ``pg_notify`` on the queue's
  channel (:func:`qhive_broker_orm.listen.notify_channel`) in the same
  statement; PostgreSQL delivers it at commit, and folds identical
  notifications of one transaction into one. Consumers listen with
  :class:`qhive_broker_orm.listen.Listener` (psycopg >= 3.2). A delayed insert or
  release sends the payload :data:`LATER`: the consumers it wakes find nothing to
  take, but ask when it falls due (:meth:`Dialect.next_due`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qhive.contracts import Message

from qhive_broker_orm.dialects.base import QUEUE_TABLE, Dialect, as_bytes
from qhive_broker_orm.listen import Listener, notify_channel

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["LATER", "PostgreSQL"]

#: The payload of the NOTIFY of a delayed insert or release: a consumer it wakes finds
#: nothing to take, but asks when the queue's next row falls due (others keep what
#: they know: ``Listener.flagged``).
LATER = "later"


class PostgreSQL(Dialect):
    vendor = "postgresql"
    display_name = "PostgreSQL"

    def claim(self, conn: BaseDatabaseWrapper, queue: str, count: int,
              retry: float) -> list[Message]:
        # MATERIALIZED: the locking SELECT runs exactly once, before the UPDATE.
        sql = (
            f"WITH claimed AS MATERIALIZED ("
            f" SELECT id, visible_at FROM {QUEUE_TABLE}"
            f" WHERE queue = %s AND visible_at <= now()"
            f" ORDER BY priority DESC, visible_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
            f" UPDATE {QUEUE_TABLE} AS q"
            f" SET visible_at = now() + %s * interval '1 second', deliveries = q.deliveries + 1"
            f" FROM claimed WHERE q.id = claimed.id"
            f" RETURNING q.id, q.payload, q.deliveries, q.priority, claimed.visible_at"
        )
        with conn.cursor() as cursor:
            cursor.execute(sql, [queue, count, retry])
            rows = cursor.fetchall()
        rows.sort(key=lambda r: (-r[3], r[4], r[0]))  # RETURNING has no order
        return [Message(str(i), as_bytes(p), d) for i, p, d, _, _ in rows]

    def describe(self, conn: BaseDatabaseWrapper) -> str:
        conn.ensure_connection()
        major, minor = divmod(conn.pg_version, 10000)
        return f"postgresql {major}.{minor}"

    def clock(self, conn: BaseDatabaseWrapper, offset: float = 0.0) -> tuple[str, list[Any]]:
        return ("now() + %s * interval '1 second'", [offset]) if offset else ("now()", [])

    def insert(self, conn: BaseDatabaseWrapper, queue: str, payloads: list[bytes], *,
               delay: float = 0.0, priority: int = 0) -> list[str]:
        sql, params = self.insert_statement(conn, queue, payloads, delay=delay, priority=priority)
        with conn.cursor() as cursor:
            cursor.execute(f"{sql} RETURNING id, pg_notify(%s, '{LATER if delay else ''}')",
                           [*params, notify_channel(queue)])
            return [str(i) for i in sorted(r[0] for r in cursor.fetchall())]

    def release(self, conn: BaseDatabaseWrapper, queue: str, row_id: int,
                delay: float = 0.0) -> None:
        sql, params = self.release_statement(conn, row_id, delay)
        with conn.cursor() as cursor:
            cursor.execute(f"{sql} RETURNING pg_notify(%s, '{LATER if delay else ''}')",
                           [*params, notify_channel(queue)])

    def wake(self, conn: BaseDatabaseWrapper, queue: str) -> None:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [notify_channel(queue)])

    def can_listen(self) -> bool:
        return Listener.available()
