"""What the ORM broker does differently on each database, behind one interface.

:class:`Dialect` holds every operation whose SQL or behaviour depends on the
database; :mod:`qhive_broker_orm.broker` holds the rest and asks the dialect of
its connection (chosen once, by :func:`qhive_broker_orm.dialects.dialect_for`).
Each database's SQL reads alone in its module: ``postgresql``, ``mysql``
(MariaDB too), ``sqlite``.

What every dialect keeps (the broker's tests check it on each database):

* a claim is atomic: two concurrent claims never take the same row;
* a claim returns its messages in queue order (``visible_at``, then ``id``),
  with ``deliveries`` counting this delivery;
* inside a caller's transaction a statement joins it, and never commits it;
* times are written in the format Django uses for the column, so the ORM (the
  admin, ``QueuedTask``) reads what the broker wrote.

Dialects are stateless: one instance per database serves every broker.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from django.db import transaction
from django.db.utils import InterfaceError, OperationalError
from django.utils import timezone

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from qhive.contracts import Message

    from qhive_broker_orm.doorbell import Doorbell

__all__ = ["QUEUE_TABLE", "STAT_TABLE", "Dialect", "as_bytes", "own_transaction"]

#: The tables of :mod:`qhive_broker_orm.models` (the broker does not import the
#: models, so that it works before ``django.setup()``).
QUEUE_TABLE = "qhive_queued_task"
STAT_TABLE = "qhive_broker_stat"


class Dialect(ABC):
    """The operations of the ORM broker that differ by database.

    ``conn`` is always Django's connection for the broker's database alias;
    methods run statements on it and let Django's database errors propagate
    (the broker turns them into :class:`qhive.errors.BrokerError`).
    """

    #: Django's ``connection.vendor`` of the database.
    vendor: ClassVar[str]
    #: The database as error messages name it.
    display_name: ClassVar[str]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} dialect>"

    # -- required

    @abstractmethod
    def claim(self, conn: BaseDatabaseWrapper, queue: str, count: int,
              retry: float) -> list[Message]:
        """Take up to ``count`` visible messages of ``queue`` atomically: hide each
        for ``retry`` seconds and count the delivery. In queue order."""

    @abstractmethod
    def describe(self, conn: BaseDatabaseWrapper) -> str:
        """The database and its version, e.g. ``"postgresql 16.4"`` (for ``info()``)."""

    # -- optional, with defaults

    def clock(self, conn: BaseDatabaseWrapper, offset: float = 0.0) -> tuple[str, list[Any]]:
        """SQL for "now + ``offset`` seconds" in the column's format, and its parameters.

        The default is the Python clock, adapted as Django would: correct, but each
        host of a cluster brings its own clock. Dialects that can use the
        database's clock (one for every host) override this.
        """
        value = timezone.now()
        if offset:
            value += dt.timedelta(seconds=offset)
        return "%s", [conn.ops.adapt_datetimefield_value(value)]

    def insert(self, conn: BaseDatabaseWrapper, queue: str, payloads: list[bytes]) -> list[str]:
        """INSERT ``payloads`` into ``queue``, visible now, and wake its listeners
        (:meth:`wake`); their ids in order, as strings.

        The default: one statement, with ``RETURNING id`` where the database has
        it; else one INSERT per row in a transaction (all or nothing).
        """
        sql, params = self.insert_statement(conn, queue, payloads)
        with conn.cursor() as cursor:
            if len(payloads) == 1:
                cursor.execute(sql, params)
                return [str(cursor.lastrowid)]
            if conn.features.can_return_rows_from_bulk_insert:
                cursor.execute(f"{sql} RETURNING id", params)
                return [str(i) for i in sorted(r[0] for r in cursor.fetchall())]
        # MySQL (not MariaDB), SQLite < 3.35: no RETURNING; one INSERT per row.
        with transaction.atomic(using=conn.alias):
            return [i for p in payloads for i in self.insert(conn, queue, [p])]

    def release(self, conn: BaseDatabaseWrapper, queue: str, row_id: int) -> None:
        """Make taken message ``row_id`` of ``queue`` visible at once, in its
        original place (``visible_at`` back to ``created``), and wake its listeners."""
        with conn.cursor() as cursor:
            cursor.execute(f"UPDATE {QUEUE_TABLE} SET visible_at = created WHERE id = %s",
                           [row_id])

    def wake(self, conn: BaseDatabaseWrapper, queue: str) -> None:
        """Wake the consumers waiting on ``queue`` (at commit). Default: nobody waits."""

    def can_listen(self) -> bool:
        """A consumer can sleep until :meth:`wake` (see :mod:`qhive_broker_orm.listen`)."""
        return False

    def doorbell(self, conn: BaseDatabaseWrapper, queue: str) -> Doorbell | None:
        """Where a consumer of ``queue`` sleeps until :meth:`wake` when the database
        cannot notify (see :mod:`qhive_broker_orm.doorbell`). Default: none."""
        return None

    def upsert(self, conn: BaseDatabaseWrapper, key: str, columns: list[str]) -> str:
        """The clause that makes an ``INSERT`` replace the row with the same unique
        ``key`` column, setting ``columns`` to the inserted values."""
        q = conn.ops.quote_name
        updates = ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in columns)
        return f"ON CONFLICT ({q(key)}) DO UPDATE SET {updates}"

    def connection_failed(self, exc: Exception) -> bool:
        """Django database error ``exc`` says the connection failed, so that a new
        connection may succeed (the broker retries once and raises
        :class:`~qhive.errors.BrokerConnectionError`)."""
        return isinstance(exc, (OperationalError, InterfaceError))

    # -- for dialects

    def insert_statement(self, conn: BaseDatabaseWrapper, queue: str,
                         payloads: list[bytes]) -> tuple[str, list[Any]]:
        """One ``INSERT`` of ``payloads`` into ``queue``, visible now, and its parameters."""
        now_sql, now_params = self.clock(conn)
        row = f"(%s, %s, {now_sql}, 0, {now_sql})"
        params: list[Any] = []
        for payload in payloads:
            params += [queue, payload, *now_params, *now_params]
        sql = (f"INSERT INTO {QUEUE_TABLE} (queue, payload, visible_at, deliveries, created) "
               f"VALUES {', '.join([row] * len(payloads))}")
        return sql, params


def as_bytes(value: Any) -> bytes:
    """A ``BinaryField`` value as read by the database driver (``memoryview`` on
    PostgreSQL, ``bytes`` elsewhere), as ``bytes``."""
    return value if type(value) is bytes else bytes(value)


@contextlib.contextmanager
def own_transaction(conn: BaseDatabaseWrapper, cursor: Any, begin: str) -> Iterator[None]:
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
