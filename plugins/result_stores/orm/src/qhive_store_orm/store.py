"""``OrmResultStore``: task results in the ``qhive_task`` table, written in batches.

The rules of :class:`qhive.contracts.ResultStore` hold: a success is final; a
failure is replaced by a later save and its ``attempt_count`` becomes the stored
count plus one; ``save_limit`` keeps the newest successes (per
``save_limit_per`` value if set), ``-1`` none; failures are always kept.

One :meth:`OrmResultStore.save_many` call, whatever its size:

1. encodes every value (outside any transaction); a value the serializer cannot
   encode never loses the task (see :meth:`OrmResultStore._prepare`);
2. reads which of the ids are already stored (one indexed ``SELECT`` of three
   columns, no lock);
3. in one transaction, inserts the new rows (one ``executemany``) and updates
   the stored failures (one ``executemany``), each update conditional on the row
   still being the failure that was read. If another process got there first (a
   duplicate id on insert, an update that matched nothing) the transaction rolls
   back and the batch is redone from step 2: optimistic, so no row or table is
   locked while results are computed;
4. prunes, if ``save_limit > 0``: one indexed query finds what lies beyond the
   limit and one ``DELETE`` removes it — for the whole table, or with a window
   function for just the groups / names / funcs the batch touched. Successes of
   the batch that could not survive pruning are not inserted in the first place.

On PostgreSQL the transaction of step 3 also announces what it wrote (``NOTIFY``,
one statement), and :meth:`OrmResultStore.wait` — ``result(wait=…)`` — sleeps on a
``LISTEN`` connection until its result is announced instead of polling
(:mod:`qhive_store_orm.waiting`). Other databases poll.

Django Q2 instead locks every success row (``SELECT ... FOR UPDATE``) on every
save and deletes one row per save, so lowering ``save_limit`` never shrinks the
table; here the first batch after the change does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import itertools
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.db import (
    DatabaseError,
    IntegrityError,
    connections,
    models,
    router,
    transaction,
)
from django.db.models import (
    Avg,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Q,
    Value,
    Window,
)
from django.db.models.functions import Now, RowNumber
from django.utils import timezone
from qhive.config import Config
from qhive.contracts import ResultStore, ResultSummary, TaskResult
from qhive.errors import SetupError
from qhive.naming import humanize
from qhive.result_packages import storable
from qhive_broker_orm.doorbell import Doorbell, doorbell_of

from qhive_store_orm import waiting
from qhive_store_orm.codec import ValueCodec, settings_config, use_codec, with_django_secret
from qhive_store_orm.fields import Encoded

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from qhive_store_orm.models import ResultStat, Task

__all__ = ["OrmResultStore"]

logger = logging.getLogger("qhive.store.orm")

#: How often a batch is redone after losing a race with another process.
MAX_ATTEMPTS = 5
#: Columns updated when a stored failure is replaced (as Django Q2 does, plus cluster,
#: pinned and next_attempt: a later failure without a next attempt clears it).
UPDATED = ("result", "success", "stopped", "cluster", "attempt_count", "pinned", "next_attempt")
#: Longest strings the columns take; longer ones are cut rather than losing the task.
LIMITS = {"name": 100, "func": 256, "hook": 256, "group": 100, "cluster": 100}

#: psycopg parses a statement once and keeps it when it has at most this many parameters.
PSYCOPG_CACHED_PARAMS = 50
#: Field classes whose values (str, int, bool, None) go to the database as they are.
_PLAIN = (models.CharField, models.IntegerField, models.BooleanField)
#: A waiter with no deadline still wakes this often, only to sleep again (no query).
LONGEST_SLEEP = 60.0

T = TypeVar("T")


def _task_model() -> type[Task]:
    # Imported late: the entry point must import without Django being set up.
    from qhive_store_orm.models import Task

    return Task


def _stat_model() -> type[ResultStat]:
    # Late, as _task_model.
    from qhive_store_orm.models import ResultStat

    return ResultStat


def _seconds(value: Any) -> float | None:
    # Avg over a duration is a timedelta on most databases, a number of
    # microseconds where the database has no interval type.
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return float(value) / 1e6


def _params_per_query(alias: str) -> int:
    """Values one ``IN (...)`` may take on database ``alias`` (SQLite's limit is low)."""
    return max((connections[alias].features.max_query_params or 10_000) - 50, 100)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Conflict(Exception):
    """Another process changed a row of the batch between the read and the write."""


@dataclasses.dataclass(slots=True)
class _Prepared:
    """One result as it will be stored: the (possibly converted) result and its encoded values."""

    result: TaskResult
    args: bytes
    kwargs: bytes
    value: bytes | None


@dataclasses.dataclass(slots=True)
class _Stored:
    """Placeholder in a batch's answer: whatever the table holds for this id."""

    id: str


class OrmResultStore(ResultStore):
    """Results in the ``Task`` model's table.

    :param config: the cluster's config; ``None`` reads Django's settings. A
        config without a secret key (a bare ``Config()``) is keyed by Django's
        ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``, keeping its own ``name``
        (the signing salt) and serializer.
    :param database: the database alias (``Q_CLUSTER["result_store_options"]
        = {"database": "results"}``); ``None``: ``router.db_for_write(Task)``,
        used for reads too, so a result is visible as soon as it is saved.
    """

    #: the Django app holding the Task model; a system check wants it installed
    django_app = "qhive_store_orm"

    def __init__(self, *, config: Config | None = None, database: str | None = None) -> None:
        super().__init__(config=config if config is not None else settings_config())
        if database is not None and not isinstance(database, str):
            raise TypeError(f"database must be a database alias (str), got {database!r}")
        self.database = database
        self._codec: ValueCodec | None = None
        self._init_listeners()

    def _init_listeners(self) -> None:
        #: The LISTEN connections of this process by database alias (see :meth:`wait`).
        self._listeners: dict[str, waiting.Listeners] = {}
        self._listeners_lock = threading.Lock()

    # -- plumbing

    @property
    def alias(self) -> str:
        """The database alias this store reads and writes."""
        return self.database or router.db_for_write(_task_model())

    @property
    def codec(self) -> ValueCodec:
        """Encodes and verifies the stored values (built on first use)."""
        if self._codec is None:
            self._codec = ValueCodec.for_config(with_django_secret(self.config))
        return self._codec

    def _tasks(self, alias: str | None = None) -> QuerySet:
        return _task_model().objects.using(alias or self.alias)

    def _load(self, queryset: QuerySet) -> list[TaskResult]:
        with use_codec(self.codec):  # decode with this store's codec, not the settings' one
            return [task.to_result() for task in queryset]

    def ping(self) -> bool:
        """Query the results table once; a missing one is a SetupError naming migrate."""
        alias, table = self.alias, _task_model()._meta.db_table
        connection = connections[alias]
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT 1 FROM {connection.ops.quote_name(table)} WHERE 1 = 0")
                cursor.fetchall()
        except DatabaseError as exc:
            try:  # connection errors stay what they are; a missing table is a set-up error
                missing = table not in connection.introspection.table_names()
            except DatabaseError:
                missing = False
            if missing:
                raise SetupError(
                    f"ORM result store: the table {table!r} is not in database {alias!r}; "
                    f"run 'manage.py migrate --database {alias}' (with 'qhive_store_orm' in "
                    f"INSTALLED_APPS)") from exc
            raise
        return True

    def close(self) -> None:
        with self._listeners_lock:
            listeners, self._listeners = list(self._listeners.values()), {}
        for each in listeners:
            each.close()
        connection = connections[self.alias]
        if not connection.in_atomic_block:  # never break a caller's transaction
            connection.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "database": self.database}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config = state["config"]
        self.database = state["database"]
        self._codec = None
        self._init_listeners()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} database={self.database or 'routed'!r}>"

    # -- reading

    def get(self, task_id: str) -> TaskResult | None:
        # Raw SQL: a waiter looks after every announcement, and building the query
        # took longer than running it (0.5 of 0.9 ms of CPU, measured on PostgreSQL).
        alias = self.alias
        sql = _lookup_sql(connections[alias])
        found = self._load(self._tasks(alias).raw(sql, [_key(task_id)]))
        return found[0] if found else None

    def get_many(self, task_ids: Iterable[str]) -> dict[str, TaskResult]:
        keys = list(dict.fromkeys(_key(task_id) for task_id in task_ids))
        found: dict[str, TaskResult] = {}
        for chunk in _chunks(keys, _params_per_query(self.alias)):
            found.update((r.id, r) for r in self._load(self._tasks().filter(id__in=chunk)))
        return found

    def get_by_name(self, name: str) -> TaskResult | None:
        found = self._load(self._tasks().filter(name=name).order_by("-stopped", "-id")[:1])
        return found[0] if found else None

    def get_group(self, group: str, *, failures: bool = False) -> list[TaskResult]:
        tasks = self._tasks().filter(group=self._clip("group", group))
        if not failures:
            tasks = tasks.filter(success=True)
        return self._load(tasks.order_by("-stopped", "-id"))

    def count_group(self, group: str, *, failures: bool = False) -> int:
        tasks = self._tasks().filter(group=self._clip("group", group))
        if failures:
            tasks = tasks.filter(success=False)
        return tasks.count()

    def summary(self, since: dt.datetime) -> ResultSummary:
        """Counted by one aggregate query; no row is loaded."""
        recent = Q(success=True, stopped__gte=since)
        counts = self._tasks().aggregate(
            successes=Count("pk", filter=Q(success=True)),
            failures=Count("pk", filter=Q(success=False)),
            recent=Count("pk", filter=recent),
            mean=Avg(F("stopped") - F("started"), filter=recent),
        )
        return ResultSummary(counts["successes"], counts["failures"], counts["recent"],
                             _seconds(counts["mean"]))

    # -- waiting

    def wait(self, look: Callable[[], T | None], deadline: float | None, *,
             task_id: str | None = None, name: str | None = None,
             group: str | None = None) -> T | None:
        """On PostgreSQL (with psycopg >= 3.2), like :meth:`ResultStore.wait` without
        polling: LISTEN, look, then look only when a save of ``task_id``, ``name`` or
        ``group`` is announced, or when the LISTEN connection broke (then on a new
        one). Sleeping sends the database nothing. On a SQLite file, it sleeps on the
        database's doorbell, which every save rings. Elsewhere, or while it cannot
        listen, it polls."""
        about = {"task_id": task_id, "name": name, "group": group}
        listeners = self._listeners_of(self.alias)
        if listeners is None:
            bell = doorbell_of(connections[self.alias], waiting.BELL)
            if bell is None:
                return super().wait(look, deadline, **about)
            return self._wait_ringing(bell, look, deadline, about)
        if deadline is not None and time.monotonic() >= deadline:
            return look()
        wanted = waiting.announced_keys(task_id, name, self._clip("group", group))
        try:
            listener = listeners.take()
        except waiting.CannotListen:
            return super().wait(look, deadline, **about)
        try:
            # Listening first, then one look: a waiter looks right after the enqueue, when
            # the result is seldom there, and a look (0.5 ms of CPU) is dearer than LISTEN.
            found = look()
            while found is None:
                seconds = LONGEST_SLEEP if deadline is None else deadline - time.monotonic()
                if seconds <= 0:
                    break
                try:
                    news = listeners.news(listener, min(seconds, LONGEST_SLEEP), wanted)
                except waiting.ListenerLost as exc:
                    logger.warning("ORM result store: the LISTEN connection of a waiter "
                                   "broke (%s); listening on a new one", exc)
                    listener.close()
                    try:
                        listener = listeners.take()
                    except waiting.CannotListen:
                        return super().wait(look, deadline, **about)
                    news = True  # notifications may have been missed
                if news:
                    found = look()
        except BaseException:
            listener.close()
            raise
        listeners.give_back(listener)
        return found

    def _wait_ringing(self, bell: Doorbell, look: Callable[[], T | None],
                      deadline: float | None, about: dict[str, Any]) -> T | None:
        """:meth:`wait` on SQLite: look, then look again whenever a save rings."""
        if deadline is not None and time.monotonic() >= deadline:
            return look()
        try:
            sleeper = bell.sleeper()
        except OSError as exc:  # a read-only directory, say: poll, as before
            logger.debug("ORM result store: cannot sleep on %r (%s); polling", bell, exc)
            return super().wait(look, deadline, **about)
        with sleeper:
            found = look()  # after the sleeper is in place: no ring is missed
            while found is None:
                seconds = LONGEST_SLEEP if deadline is None else deadline - time.monotonic()
                if seconds <= 0:
                    break
                if sleeper.wait(min(seconds, LONGEST_SLEEP)):
                    found = look()
        return found

    def _listeners_of(self, alias: str) -> waiting.Listeners | None:
        """The LISTEN connections on database ``alias``; None if it cannot notify."""
        found = self._listeners.get(alias)
        if found is None:
            if not waiting.Listeners.available(connections[alias].vendor):
                return None
            with self._listeners_lock:
                found = self._listeners.setdefault(alias, waiting.Listeners(alias))
        return found

    # -- deleting

    def delete(self, task_id: str) -> bool:
        deleted, _ = self._tasks().filter(id=_key(task_id)).delete()
        return deleted > 0

    def delete_group(self, group: str) -> int:
        deleted, _ = self._tasks().filter(group=self._clip("group", group)).delete()
        return deleted

    # -- statistics (for clusters whose broker keeps none)

    #: One upsert per save, in the ``qhive_result_stat`` table of the store's database.
    keeps_stats = True
    #: ``set_stat`` deletes expired statistics (stopped clusters) at most this often.
    stats_sweep_interval = 60.0
    _stats_swept = 0.0

    def set_stat(self, key: str, value: bytes, ttl: float) -> None:
        model, alias = _stat_model(), self.alias
        # The database's clock sets and checks the expiry: hosts may disagree.
        expires = ExpressionWrapper(
            Now() + Value(dt.timedelta(seconds=float(ttl)), output_field=DurationField()),
            output_field=models.DateTimeField())
        with_target = connections[alias].features.supports_update_conflicts_with_target
        model.objects.using(alias).bulk_create(
            [model(key=_stat_key(key), value=bytes(value), expires=expires)],
            update_conflicts=True, update_fields=["value", "expires"],
            unique_fields=["key"] if with_target else None)  # MySQL upserts on any key
        if time.monotonic() - self._stats_swept >= self.stats_sweep_interval:
            model.objects.using(alias).filter(expires__lte=Now()).delete()
            self._stats_swept = time.monotonic()

    def get_stat(self, key: str) -> bytes | None:
        rows = (_stat_model().objects.using(self.alias)
                .filter(key=_stat_key(key), expires__gt=Now()).values_list("key", "value"))
        # A case-insensitive collation (MySQL) may match another key: compare exactly.
        return next((bytes(v) for k, v in rows if k == key), None)

    def get_stats(self, prefix: str) -> list[bytes]:
        rows = (_stat_model().objects.using(self.alias)
                .filter(key__startswith=prefix, expires__gt=Now()).values_list("key", "value"))
        return [bytes(v) for k, v in rows if k.startswith(prefix)]  # LIKE may ignore case

    # -- saving

    def save(self, result: TaskResult) -> TaskResult:
        return self.save_many([result])[0]

    def save_many(self, results: Iterable[TaskResult]) -> list[TaskResult]:
        incoming = list(results)
        if not incoming:
            return []
        prepared = [self._prepare(r) for r in incoming]
        alias = self.alias
        inserted = self._insert_new(prepared, alias)
        rest = [p for p in prepared if p.result.id not in inserted]
        more, written = self._write_retrying(rest, alias) if rest else ([], [])
        slow = iter(more)
        answer = [p.result if p.result.id in inserted else next(slow) for p in prepared]
        written += [p.result for p in prepared if p.result.id in inserted
                    and p.result.success and not p.result.pinned]
        if self.config.save_limit > 0 and written:
            # Inside a caller's transaction, a savepoint keeps a failed prune from breaking it.
            nested = connections[alias].in_atomic_block
            try:
                with transaction.atomic(using=alias) if nested else contextlib.nullcontext():
                    self._prune(alias, written)
            except DatabaseError:  # the results are saved; the next batch prunes again
                logger.exception("pruning results beyond save_limit=%s failed",
                                 self.config.save_limit)
        stored_ids = [a.id for a in answer if isinstance(a, _Stored)]
        if stored_ids:
            stored = {r.id: r for r in self._load(self._tasks(alias).filter(id__in=stored_ids))}
            answer = [stored.get(a.id) if isinstance(a, _Stored) else a for a in answer]
        return [a if a is not None else r for a, r in zip(answer, incoming, strict=True)]

    def _write_retrying(
        self, prepared: list[_Prepared], alias: str
    ) -> tuple[list[TaskResult | _Stored | None], list[TaskResult]]:
        """:meth:`_write`, redone when it lost a race with another writer."""
        for attempt in itertools.count(1):
            try:
                return self._write(prepared, alias)
            except (_Conflict, IntegrityError) as exc:
                if attempt >= MAX_ATTEMPTS:
                    raise
                logger.debug("result batch raced with another writer (%s); redoing it", exc)
        raise AssertionError("unreachable")

    def _write(
        self, prepared: list[_Prepared], alias: str
    ) -> tuple[list[TaskResult | _Stored | None], list[TaskResult]]:
        """Apply the save rules to the batch and write it in one transaction.

        Returns the answer per result (what is stored, ``_Stored`` for a success
        already in the table, None when not kept) and the successes written.
        """
        limit = self.config.save_limit
        existing = self._existing(alias, list(dict.fromkeys(p.result.id for p in prepared)))
        final: dict[str, TaskResult] = {}  # id -> what the batch leaves in the table
        encoded: dict[str, _Prepared] = {}
        answer: list[TaskResult | _Stored | None] = []
        for item in prepared:
            new = item.result
            before = final.get(new.id)
            if before is not None:
                stored_success, attempts = before.success, before.attempt_count
            elif new.id in existing:
                stored_success, attempts = existing[new.id]
            else:
                stored_success, attempts = False, None
            if stored_success:  # a success is final
                answer.append(before if before is not None else _Stored(new.id))
                continue
            if new.success and limit < 0 and not new.pinned:  # successes are not kept
                answer.append(None)
                continue
            if attempts is not None:
                new = dataclasses.replace(new, attempt_count=attempts + 1)
            final[new.id] = new
            encoded[new.id] = item
            answer.append(new)

        if limit > 0:  # do not insert what pruning would delete at once
            dropped = self._beyond_limit(final, existing, limit)
            if dropped:
                for r in dropped:
                    del final[r.id]
                gone = {id(r) for r in dropped}
                answer = [None if id(a) in gone else a for a in answer]

        inserts = [r for r in final.values() if r.id not in existing]
        updates = [r for r in final.values() if r.id in existing]
        connection = connections[alias]
        with transaction.atomic(using=alias), connection.cursor() as cursor:
            if inserts:
                cursor.executemany(*self._insert_sql(connection, inserts, encoded))
            if updates:
                cursor.executemany(*self._update_sql(connection, updates, encoded, existing))
                if cursor.rowcount != len(updates):
                    raise _Conflict(f"{len(updates) - cursor.rowcount} stored failure(s) changed")
            if final and connection.vendor == "postgresql":  # wakes the waiters, at commit
                waiting.announce(cursor, waiting.payloads(final.values()))
            elif final and (bell := doorbell_of(connection, waiting.BELL)) is not None:
                transaction.on_commit(bell.ring, using=alias)
        return answer, [r for r in final.values() if r.success and not r.pinned]

    def _insert_new(self, prepared: list[_Prepared], alias: str) -> set[str]:
        """The common case in one statement, with no read before it and no
        transaction around it: insert the results whose id is not stored yet
        (``ON CONFLICT DO NOTHING … RETURNING``), announcing them in the same
        statement on PostgreSQL. The ids inserted; the rest (retries of stored
        failures, repeats of stored successes) take the path of :meth:`_write`.

        Only on PostgreSQL and SQLite >= 3.35, outside a caller's transaction (where
        :meth:`_write`'s savepoint keeps a failed batch from breaking it), for a batch
        of distinct ids that fits one statement and that the save rules would insert
        whole (no success dropped by ``save_limit`` within the batch). Elsewhere:
        nothing inserted, all go to :meth:`_write` (four statements more: the read,
        BEGIN, NOTIFY, COMMIT).
        """
        connection = connections[alias]
        limit = self.config.save_limit
        columns = len(_task_model()._meta.concrete_fields)
        ids = {p.result.id for p in prepared}
        if (connection.vendor not in ("postgresql", "sqlite") or connection.in_atomic_block
                or not connection.get_autocommit()
                or not connection.features.can_return_rows_from_bulk_insert
                or len(ids) < len(prepared) or limit < 0
                or len(prepared) * columns > _params_per_query(alias)
                or (limit > 0 and sum(p.result.success and not p.result.pinned
                                      for p in prepared) > limit)):
            return set()
        sql, params = self._insert_new_sql(connection, prepared)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            inserted = {row[0] for row in cursor.fetchall()}
        if inserted and (bell := doorbell_of(connection, waiting.BELL)) is not None:
            bell.ring()  # committed: the statement was its own transaction
        return inserted

    def _insert_new_sql(self, connection: Any, prepared: list[_Prepared]) -> tuple[str, list[Any]]:
        meta = _task_model()._meta
        fields = meta.concrete_fields
        quote = connection.ops.quote_name
        convert = _converters(fields, connection)
        rows = [[v if c is None else c(v) for c, v in
                 zip(convert, self._values(fields, p.result, p), strict=True)] for p in prepared]
        insert = (f"INSERT INTO {quote(meta.db_table)} "
                  f"({', '.join(quote(f.column) for f in fields)}) ")
        conflict = f" ON CONFLICT ({quote('id')}) DO NOTHING RETURNING {quote('id')}"
        row = f"({', '.join(['%s'] * len(fields))})"
        values = f"VALUES {', '.join([row] * len(rows))}"
        params = [value for row_values in rows for value in row_values]
        if connection.vendor != "postgresql":
            return f"{insert}{values}{conflict}", params
        # Announced at commit, by the same statement. The announcement names the whole
        # batch: a waiter woken for an id that was already stored looks once more.
        announced = [value for payload in waiting.payloads(p.result for p in prepared)
                     for value in (waiting.CHANNEL, payload)]
        if len(params) + len(announced) > PSYCOPG_CACHED_PARAMS:
            # One array per column: psycopg parses a statement of more parameters on
            # every call (60 µs per row of 14 columns, measured); this SQL is the same
            # for every batch size. For a few rows VALUES is cheaper (0.4 ms for one).
            values = "SELECT * FROM unnest({})".format(
                ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields))
            params = [list(column) for column in zip(*rows, strict=True)]
        notify = ", ".join(["pg_notify(%s, %s)"] * (len(announced) // 2))
        sql = (f"WITH inserted AS ({insert}{values}{conflict}),"
               f" announced AS MATERIALIZED (SELECT {notify})"
               f" SELECT inserted.id FROM inserted, announced")
        return sql, params + announced

    def _existing(self, alias: str, ids: list[str]) -> dict[str, tuple[bool, int]]:
        """id -> (success, attempt_count) of the ids already stored."""
        size = _params_per_query(alias)
        found: dict[str, tuple[bool, int]] = {}
        for chunk in _chunks(ids, size):
            rows = (self._tasks(alias).filter(id__in=chunk).order_by()
                    .values_list("id", "success", "attempt_count"))
            found.update((i, (s, a)) for i, s, a in rows)
        return found

    def _beyond_limit(
        self, final: dict[str, TaskResult], existing: dict[str, Any], limit: int
    ) -> list[TaskResult]:
        """New successes of the batch that are not among the ``limit`` newest of
        their partition even within the batch: pruning would delete them."""
        per = self.config.save_limit_per
        partitions: dict[Any, list[TaskResult]] = defaultdict(list)
        for r in final.values():
            if r.success and not r.pinned:
                partitions[getattr(r, per) if per else None].append(r)
        dropped = []
        for members in partitions.values():
            if len(members) > limit:
                members.sort(key=lambda r: (r.stopped, r.id), reverse=True)
                dropped.extend(r for r in members[limit:] if r.id not in existing)
        return dropped

    def _insert_sql(self, connection: Any, rows: list[TaskResult],
                    encoded: dict[str, _Prepared]) -> tuple[str, list[list[Any]]]:
        meta = _task_model()._meta
        fields = meta.concrete_fields
        quote = connection.ops.quote_name
        sql = (f"INSERT INTO {quote(meta.db_table)} "
               f"({', '.join(quote(f.column) for f in fields)}) "
               f"VALUES ({', '.join(['%s'] * len(fields))})")
        convert = _converters(fields, connection)
        params = [
            [v if c is None else c(v) for c, v in
             zip(convert, self._values(fields, r, encoded[r.id]), strict=True)]
            for r in rows
        ]
        return sql, params

    def _update_sql(self, connection: Any, rows: list[TaskResult], encoded: dict[str, _Prepared],
                    existing: dict[str, tuple[bool, int]]) -> tuple[str, list[list[Any]]]:
        meta = _task_model()._meta
        fields = [meta.get_field(name) for name in UPDATED]
        quote = connection.ops.quote_name
        sql = (f"UPDATE {quote(meta.db_table)} SET "
               + ", ".join(f"{quote(f.column)} = %s" for f in fields)
               + f" WHERE {quote('id')} = %s AND {quote('success')} = %s"
               f" AND {quote('attempt_count')} = %s")
        convert = _converters(fields, connection)
        false = meta.get_field("success").get_db_prep_save(False, connection)
        params = [
            [*(v if c is None else c(v) for c, v in
               zip(convert, self._values(fields, r, encoded[r.id]), strict=True)),
             r.id, false, existing[r.id][1]]
            for r in rows
        ]
        return sql, params

    @staticmethod
    def _values(fields: Sequence[Any], r: TaskResult, item: _Prepared) -> list[Any]:
        """The values of ``fields`` for the row of ``r``."""
        values = {
            "id": r.id, "name": r.name, "func": r.func, "hook": r.hook,
            "args": Encoded(item.args), "kwargs": Encoded(item.kwargs),
            "result": None if item.value is None else Encoded(item.value),
            "group": r.group, "cluster": r.cluster, "started": _db_datetime(r.started),
            "stopped": _db_datetime(r.stopped), "success": r.success,
            "attempt_count": r.attempt_count, "pinned": r.pinned,
            "next_attempt": None if r.next_attempt is None else _db_datetime(r.next_attempt),
        }
        return [values[f.name] for f in fields]

    # -- encoding

    def _prepare(self, r: TaskResult) -> _Prepared:
        """Encode ``r``'s values; a value the serializer cannot encode does not lose
        the task.

        * An unencodable **result** turns the task into a failure whose result
          says why (the serializer's error and a short ``repr`` of the value).
        * Unencodable **args** / **kwargs** are stored as the ``repr()`` of each
          argument; the task keeps its outcome. Both are logged.
        """
        codec = self.codec
        r = dataclasses.replace(
            r,
            name=self._clip("name", r.name or _default_name(r.id)),
            func=self._clip("func", r.func),
            hook=self._clip("hook", r.hook),
            group=self._clip("group", r.group),
            cluster=self._clip("cluster", r.cluster),
            args=tuple(r.args or ()),
            kwargs=dict(r.kwargs or {}),
        )
        try:
            return self._encoded(r)
        except Exception:
            return self._encoded(storable(codec.codecs[0], r))

    def _encoded(self, r: TaskResult) -> _Prepared:
        codec = self.codec
        value = None if r.result is None else codec.encode(r.result)
        return _Prepared(r, codec.encode(r.args), codec.encode(r.kwargs), value)

    @staticmethod
    def _clip(field: str, value: str | None) -> str | None:
        if value is None:
            return None
        return value[: LIMITS[field]]

    # -- pruning

    def _prune(self, alias: str, written: list[TaskResult]) -> None:
        """Delete the successes beyond ``save_limit`` (per ``save_limit_per`` value)
        in the partitions ``written`` touched. Never locks more than it deletes."""
        limit, per = self.config.save_limit, self.config.save_limit_per
        successes = self._tasks(alias).filter(success=True, pinned=False)
        if per is None:
            cut = list(successes.order_by("-stopped", "-id")
                       .values_list("stopped", "id")[limit : limit + 1])
            if cut:
                stopped, task_id = cut[0]
                successes.filter(
                    Q(stopped__lt=stopped) | Q(stopped=stopped, id__lte=task_id)
                ).delete()
            return
        keys = list({getattr(r, per) for r in written})
        size = _params_per_query(alias)
        for chunk in _chunks(keys, size):
            values = [k for k in chunk if k is not None]
            where = Q(**{f"{per}__in": values})
            if len(values) < len(chunk):
                where |= Q(**{f"{per}__isnull": True})
            doomed = list(
                successes.filter(where).order_by()
                .annotate(qhive_rank=Window(RowNumber(), partition_by=[F(per)],
                                            order_by=[F("stopped").desc(), F("id").desc()]))
                .filter(qhive_rank__gt=limit)
                .values_list("id", flat=True)
            )
            for ids in _chunks(doomed, size):
                successes.filter(id__in=ids).delete()


_lookups: dict[str, str] = {}


def _lookup_sql(connection: Any) -> str:
    """``SELECT`` of every column of one result by id, for the connection's database."""
    sql = _lookups.get(connection.vendor)
    if sql is None:
        meta, quote = _task_model()._meta, connection.ops.quote_name
        columns = ", ".join(quote(f.column) for f in meta.concrete_fields)
        sql = _lookups[connection.vendor] = (
            f"SELECT {columns} FROM {quote(meta.db_table)} WHERE {quote('id')} = %s")
    return sql


def _converters(fields: Sequence[Any], connection: Any) -> list[Any]:
    """Per field, how a Python value becomes a database value (None: it already is;
    the store puts only str, int, bool and None in such fields)."""
    return [
        None if type(f) in _PLAIN else functools.partial(f.get_db_prep_save, connection=connection)
        for f in fields
    ]


def _stat_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > 255:
        raise ValueError(f"qhive-store-orm: stat keys are 1 to 255 characters, got {key!r}")
    return key


def _key(task_id: Any) -> str:
    return task_id.hex if isinstance(task_id, uuid.UUID) else task_id


def _default_name(task_id: str) -> str:
    try:
        return humanize(task_id) if len(task_id) == 32 else task_id
    except ValueError:  # not hex
        return task_id


def _db_datetime(value: dt.datetime) -> dt.datetime:
    """An aware datetime under ``USE_TZ`` (naive ones are taken as UTC, as the core
    makes them), a naive one in ``TIME_ZONE`` otherwise, as Django expects."""
    if settings.USE_TZ:
        return value.replace(tzinfo=dt.UTC) if timezone.is_naive(value) else value
    return timezone.make_naive(value) if timezone.is_aware(value) else value
