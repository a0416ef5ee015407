"""What the ORM broker does differently on each database, behind one interface.

:class:`Dialect` holds every operation whose SQL or behaviour depends on the
database; :mod:`qhive_broker_orm.broker` holds the rest and asks the dialect of
its connection (chosen once, by :func:`qhive_broker_orm.dialects.dialect_for`).
Each database's SQL reads alone in its module: ``postgresql``, ``mysql``
(MariaDB too), ``sqlite``.

What every dialect keeps (the broker's tests check it on each database):

* a claim is atomic: two concurrent claims never take the same row;
* a claim takes the messages due now (``visible_at`` past) in queue order —
  ``priority`` descending, then ``visible_at``, then ``id`` — with ``deliveries``
  counting this delivery, reading the claim index in its order (no sort of every
  row due);
* a delayed message (``delay=``) is a row whose ``visible_at`` is in the future,
  like one in flight: nothing else marks it;
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
from django.utils.dateparse import parse_datetime

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
        for ``retry`` seconds and count the delivery. The highest priorities first,
        then in queue order."""

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

    def insert(self, conn: BaseDatabaseWrapper, queue: str, payloads: list[bytes], *,
               delay: float = 0.0, priority: int = 0) -> list[str]:
        """INSERT ``payloads`` into ``queue``, visible in ``delay`` seconds, and wake its
        listeners (:meth:`wake`); their ids in order, as strings.

        The default: one statement, with ``RETURNING id`` where the database has
        it; else one INSERT per row in a transaction (all or nothing).
        """
        sql, params = self.insert_statement(conn, queue, payloads, delay=delay, priority=priority)
        with conn.cursor() as cursor:
            if len(payloads) == 1:
                cursor.execute(sql, params)
                return [str(cursor.lastrowid)]
            if conn.features.can_return_rows_from_bulk_insert:
                cursor.execute(f"{sql} RETURNING id", params)
                return [str(i) for i in sorted(r[0] for r in cursor.fetchall())]
        # MySQL (not MariaDB), SQLite < 3.35: no RETURNING; one INSERT per row.
        with transaction.atomic(using=conn.alias):
            return [i for p in payloads
                    for i in self.insert(conn, queue, [p], delay=delay, priority=priority)]

    def release(self, conn: BaseDatabaseWrapper, queue: str, row_id: int,
                delay: float = 0.0) -> None:
        """Make taken message ``row_id`` of ``queue`` visible at once, in its
        original place (``visible_at`` back to ``created``), or in ``delay`` seconds;
        and wake its listeners."""
        sql, params = self.release_statement(conn, row_id, delay)
        with conn.cursor() as cursor:
            cursor.execute(sql, params)

    def next_due(self, conn: BaseDatabaseWrapper, queue: str) -> float | None:
        """Seconds until the first row of ``queue`` that cannot be taken now falls due
        (a delayed message, a receipt running out), by the clock of :meth:`clock`;
        ``<= 0`` when a row is due already (another claim holds it); None when the
        queue is empty. One statement, for a consumer about to sleep.

        The claim index leads with priority, so the queue's earliest ``visible_at`` is
        the least of each priority's first one: a loose index scan (the recursive CTE)
        reads about two index entries per priority present. A plain ``MIN(visible_at)``
        reads every row of the queue: 30 ms for 100,000 delayed ones on PostgreSQL 15,
        0.3 ms this way.
        """
        now_sql, now_params = self.clock(conn)
        sql = (f"WITH RECURSIVE prios(p) AS ("
               f" SELECT MAX(priority) FROM {QUEUE_TABLE} WHERE queue = %s"
               f" UNION ALL SELECT (SELECT MAX(priority) FROM {QUEUE_TABLE}"
               f" WHERE queue = %s AND priority < prios.p) FROM prios WHERE prios.p IS NOT NULL)"
               f" SELECT MIN((SELECT MIN(visible_at) FROM {QUEUE_TABLE}"
               f" WHERE queue = %s AND priority = prios.p)), {now_sql}"
               f" FROM prios WHERE prios.p IS NOT NULL")
        with conn.cursor() as cursor:
            cursor.execute(sql, [queue, queue, queue, *now_params])
            due, now = cursor.fetchone()
        if due is None:
            return None
        # Both in the column's format (naive or aware alike); text on SQLite, and where
        # the clock is a parameter.
        return (_datetime(due) - _datetime(now)).total_seconds()

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

    def insert_statement(self, conn: BaseDatabaseWrapper, queue: str, payloads: list[bytes],
                         *, delay: float = 0.0, priority: int = 0) -> tuple[str, list[Any]]:
        """One ``INSERT`` of ``payloads`` into ``queue``, visible in ``delay`` seconds
        (now: the statement of every plain enqueue, unchanged), and its parameters."""
        now_sql, now_params = self.clock(conn)
        due_sql, due_params = self.clock(conn, delay) if delay else (now_sql, now_params)
        columns = "queue, payload, visible_at, deliveries, created"
        row = f"%s, %s, {due_sql}, 0, {now_sql}"
        extra: list[Any] = []
        if priority:  # else the column's default, 0
            columns += ", priority"
            row += ", %s"
            extra = [priority]
        params: list[Any] = []
        for payload in payloads:
            params += [queue, payload, *due_params, *now_params, *extra]
        sql = (f"INSERT INTO {QUEUE_TABLE} ({columns}) "
               f"VALUES {', '.join([f'({row})'] * len(payloads))}")
        return sql, params

    def release_statement(self, conn: BaseDatabaseWrapper, row_id: int,
                          delay: float) -> tuple[str, list[Any]]:
        """The ``UPDATE`` of :meth:`release` and its parameters."""
        if not delay:
            return f"UPDATE {QUEUE_TABLE} SET visible_at = created WHERE id = %s", [row_id]
        due_sql, due_params = self.clock(conn, delay)
        return f"UPDATE {QUEUE_TABLE} SET visible_at = {due_sql} WHERE id = %s", [*due_params,
                                                                                   row_id]


def _datetime(value: Any) -> dt.datetime:
    """A time read back from the database: a datetime, or Django's text for it."""
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is None:
            raise ValueError(f"not a time: {value!r}")
        return parsed
    return value


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
