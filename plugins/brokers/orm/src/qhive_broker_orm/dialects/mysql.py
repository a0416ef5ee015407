"""MariaDB and MySQL (Django's vendor ``mysql``): a claim in a transaction of its own.

* **Claim** — ``START TRANSACTION``; ``SELECT … FOR UPDATE SKIP LOCKED``;
  ``UPDATE``; ``COMMIT``. MariaDB < 10.6 cannot skip locked rows: claims then
  wait for each other (still atomic). The SELECT reads the claim index
  ``(queue, priority DESC, visible_at, id)`` in order: descending index columns
  need MariaDB >= 10.8 or MySQL 8 (older ones build it ascending and sort the
  rows due).
* **Clock** — ``UTC_TIMESTAMP(6)`` when Django keeps the columns in UTC
  (``USE_TZ`` and the connection's time zone UTC); the Python clock otherwise,
  since the server does not know the local time zone Django writes.
* **Insert** — ``RETURNING`` on MariaDB >= 10.5; one ``INSERT`` per row on MySQL.
* **Statistics** — ``ON DUPLICATE KEY UPDATE``.
* **Waking** — none: consumers look every ``poll`` seconds, so a delayed message
  is taken within ``poll`` of falling due (0.2 s by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from qhive.contracts import Message

from qhive_broker_orm.dialects.base import QUEUE_TABLE, Dialect, as_bytes, own_transaction

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["MySQL"]


class MySQL(Dialect):
    vendor = "mysql"
    display_name = "MariaDB/MySQL"

    def claim(self, conn: BaseDatabaseWrapper, queue: str, count: int,
              retry: float) -> list[Message]:
        now_sql, now_params = self.clock(conn)
        until_sql, until_params = self.clock(conn, retry)
        skip = " SKIP LOCKED" if conn.features.has_select_for_update_skip_locked else ""
        select = (f"SELECT id, payload, deliveries FROM {QUEUE_TABLE}"
                  f" WHERE queue = %s AND visible_at <= {now_sql}"
                  f" ORDER BY priority DESC, visible_at, id LIMIT %s FOR UPDATE{skip}")
        with conn.cursor() as cursor, own_transaction(conn, cursor, "START TRANSACTION"):
            cursor.execute(select, [queue, *now_params, count])
            rows = cursor.fetchall()
            if rows:
                ids = [r[0] for r in rows]
                cursor.execute(
                    f"UPDATE {QUEUE_TABLE} SET visible_at = {until_sql},"
                    f" deliveries = deliveries + 1"
                    f" WHERE id IN ({', '.join(['%s'] * len(ids))})",
                    [*until_params, *ids],
                )
        return [Message(str(i), as_bytes(p), d + 1) for i, p, d in rows]

    def describe(self, conn: BaseDatabaseWrapper) -> str:
        name = "mariadb" if conn.mysql_is_mariadb else "mysql"
        return f"{name} {'.'.join(map(str, conn.mysql_version))}"

    def clock(self, conn: BaseDatabaseWrapper, offset: float = 0.0) -> tuple[str, list[Any]]:
        if settings.USE_TZ and conn.timezone_name == "UTC":
            if offset:
                return "UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND", [round(offset * 1e6)]
            return "UTC_TIMESTAMP(6)", []
        return super().clock(conn, offset)

    def upsert(self, conn: BaseDatabaseWrapper, key: str, columns: list[str]) -> str:
        q = conn.ops.quote_name
        # The key is implied: MySQL replaces the row of any unique key the INSERT repeats.
        return "ON DUPLICATE KEY UPDATE " + ", ".join(f"{q(c)} = VALUES({q(c)})" for c in columns)
