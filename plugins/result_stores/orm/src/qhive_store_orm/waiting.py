"""Waiting for results on PostgreSQL: what a save announces with ``NOTIFY``, and the
``LISTEN`` connections on which :meth:`OrmResultStore.wait` sleeps until then. On
SQLite, a save rings the database's doorbell :data:`BELL` instead
(:func:`qhive_broker_orm.doorbell.doorbell_of`), which wakes every waiter for one look.

A save that writes results sends, in its own transaction (so at commit, and never
for a batch that rolls back), ``pg_notify`` on :data:`CHANNEL` with a JSON array of
what it wrote: ``result:<id>``, ``group:<group>`` and ``name:<name>``, as stored,
cut into payloads under PostgreSQL's 8000 bytes — one statement per batch.

A waiter listens on a connection of its own (a :class:`qhive_broker_orm.listen.Listener`,
as the ORM broker's consumers and the scheduler do: psycopg >= 3.2, not Django's
connection). :class:`Listeners` keeps them per store and process: one per waiter
at a time, ``UNLISTEN``-ed between waits — so no notification queues up for a
connection nobody reads — and kept for the next waiter, so a wait costs a
``LISTEN`` and an ``UNLISTEN``, not a connection.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from qhive.announcements import names
from qhive_broker_orm.listen import Listener

if TYPE_CHECKING:
    from qhive.contracts import TaskResult

__all__ = ["BELL", "CHANNEL", "CannotListen", "ListenerLost", "Listeners", "announce",
           "payloads"]

logger = logging.getLogger("qhive.store.orm")

#: The channel of every ORM result store of a database. The broker's channels are
#: ``qhive_<queue>`` (:func:`qhive_broker_orm.listen.notify_channel`): never this one.
CHANNEL = "qhive-results"
#: On SQLite, the doorbell of the saves (``<database file>.qhive/results/``).
BELL = "results"
#: PostgreSQL refuses a payload of 8000 bytes or more (the default build).
PAYLOAD_LIMIT = 7900
#: Kept LISTEN connections per store and process, for the next waiters.
IDLE_LISTENERS = 4
#: ``application_name`` of the LISTEN connections (``pg_stat_activity``).
APPLICATION_NAME = "qhive-result-wait"


class CannotListen(Exception):
    """No LISTEN connection can be had now (logged): poll instead."""


class ListenerLost(Exception):
    """The LISTEN connection broke while waiting: notifications may have been missed."""


# --------------------------------------------------------------------------- saving


def payloads(results: Iterable[TaskResult]) -> list[str]:
    """The ``NOTIFY`` payloads announcing ``results`` (their values as stored): JSON
    arrays of ``result:<id>``, ``group:<group>`` and ``name:<name>``, each key once (a
    batch's results often share a group), each array under :data:`PAYLOAD_LIMIT`
    bytes (ASCII: ``json.dumps`` escapes the rest)."""
    keys: dict[str, None] = {}  # a loop: three times as fast as a generator here
    for result in results:
        keys[f"result:{result.id}"] = None
        if result.group is not None:
            keys[f"group:{result.group}"] = None
        if result.name:
            keys[f"name:{result.name}"] = None
    return _split(list(keys)) if keys else []


def _split(keys: list[str]) -> list[str]:
    payload = json.dumps(keys, separators=(",", ":"))
    if len(payload) < PAYLOAD_LIMIT or len(keys) == 1:
        return [payload]
    parts = len(payload) // (PAYLOAD_LIMIT * 3 // 4) + 1  # keys are of much the same size
    size = -(-len(keys) // parts)
    return [chunk for start in range(0, len(keys), size)
            for chunk in _split(keys[start : start + size])]


def announce(cursor: Any, announced: list[str]) -> None:
    """Send ``announced`` (from :func:`payloads`) in one statement on ``cursor``, inside
    the saving transaction: PostgreSQL delivers them when it commits."""
    if announced:
        cursor.execute("SELECT " + ", ".join(["pg_notify(%s, %s)"] * len(announced)),
                       [value for payload in announced for value in (CHANNEL, payload)])


# --------------------------------------------------------------------------- waiting


def announced_keys(task_id: str | None, name: str | None, group: str | None) -> frozenset[str]:
    """What the saves a waiter waits for announce (see :func:`payloads`)."""
    return frozenset(f"{kind}:{value}" for kind, value in
                     (("result", task_id), ("name", name), ("group", group)) if value is not None)


class Listeners:
    """The LISTEN connections of one store (database ``alias``) in one process.

    :meth:`take` one per wait, :meth:`news` to sleep, :meth:`give_back` (or
    ``close()`` the listener after an error). After a failure to connect, waits poll
    for ``retry_interval`` seconds before a connection is tried again, as the ORM
    broker does.
    """

    retry_interval = 30.0

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._idle: list[Listener] = []
        self._lock = threading.Lock()
        self._failed_at: float | None = None

    @staticmethod
    def available(vendor: str) -> bool:
        """A store on this database vendor can be waited for by listening."""
        return vendor == "postgresql" and Listener.available()

    def take(self) -> Listener:
        """A listener LISTENing on :data:`CHANNEL`, with nothing received before;
        :class:`CannotListen` if none can be opened now."""
        while (listener := self._kept()) is not None:
            try:
                _run(listener, "LISTEN")
                listener.drain()
                return listener
            except Exception:  # broke while kept (any psycopg error): open another
                listener.close()
        if (self._failed_at is not None
                and time.monotonic() - self._failed_at < self.retry_interval):
            raise CannotListen(f"LISTEN failed less than {self.retry_interval} s ago")
        try:
            listener = Listener.for_database(self.alias, CHANNEL, APPLICATION_NAME)
        except Exception as exc:  # psycopg's errors (its import is optional)
            self._failed_at = time.monotonic()
            logger.warning("ORM result store: cannot LISTEN on database %r (%s: %s); waiting "
                           "for results polls for %s s", self.alias, type(exc).__name__, exc,
                           self.retry_interval)
            raise CannotListen(str(exc)) from exc
        self._failed_at = None
        return listener

    @staticmethod
    def news(listener: Listener, seconds: float, wanted: Collection[str]) -> bool:
        """Sleep until a notification names one of ``wanted`` (True) or ``seconds``
        pass (False); :class:`ListenerLost` if the connection breaks."""
        end = time.monotonic() + seconds
        try:
            while (left := end - time.monotonic()) > 0:
                for notify in listener.conn.notifies(timeout=left, stop_after=1):
                    if names(notify.payload, wanted):
                        return True
        except Exception as exc:  # psycopg's errors: the connection is gone
            raise ListenerLost(f"{type(exc).__name__}: {exc}") from exc
        return False

    def give_back(self, listener: Listener) -> None:
        """UNLISTEN and keep ``listener`` for the next waiter (closed if that fails,
        or if enough are kept)."""
        try:
            _run(listener, "UNLISTEN")
        except Exception:  # any psycopg error: it is not worth keeping
            listener.close()
            return
        with self._lock:
            if len(self._idle) < IDLE_LISTENERS:
                self._idle.append(listener)
                return
        listener.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for listener in idle:
            listener.close()

    def _kept(self) -> Listener | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                listener = self._idle.pop()
            if not listener.inherited:
                return listener
            listener.close()  # only dropped: the connection is the parent's (fork)


def _run(listener: Listener, command: str) -> None:
    # psycopg is optional: imported once a Listener (which needs it) exists.
    from psycopg import sql

    listener.conn.execute(sql.SQL(command + " {}").format(sql.Identifier(CHANNEL)))
