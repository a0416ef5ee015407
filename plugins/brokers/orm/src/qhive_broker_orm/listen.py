"""LISTEN on PostgreSQL: a psycopg 3 connection of its own that wakes a sleeper.

A consumer that would otherwise poll sleeps in :meth:`Listener.wait` and is woken
within milliseconds when someone sends ``NOTIFY`` (``pg_notify``) on its channel;
notifications are delivered when the sender's transaction commits. The ORM broker
listens on :func:`notify_channel` of its queue, the scheduler of ``qhive_django``
on the schedules' channel.

The connection is not Django's: Django's connection closes with ``CONN_MAX_AGE``
and its queries would drop the notifications. It needs psycopg >= 3.2
(``Connection.notifies(timeout=...)``, see :meth:`Listener.available`); with
psycopg2 the users of this module poll instead.

A listener is per process. One inherited through ``fork`` (:attr:`Listener.inherited`)
shares its socket with the parent: :meth:`Listener.close` then leaves it alone, and
its user opens a new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import TYPE_CHECKING, Any

from django.db import connections

if TYPE_CHECKING:
    import psycopg

__all__ = ["Listener", "notify_channel"]

#: Keys of Django's connection parameters that are no ``psycopg.connect()`` arguments
#: for a plain connection: Django's cursor class and adapters, its prepared statements.
_DJANGO_ONLY_PARAMS = ("cursor_factory", "context", "prepare_threshold")


def notify_channel(queue: str) -> str:
    """The PostgreSQL ``NOTIFY`` channel of a queue (identifiers stop at 63 bytes)."""
    channel = f"qhive_{queue}"
    if len(channel.encode()) > 63:
        channel = "qhive_" + hashlib.sha256(queue.encode()).hexdigest()[:40]
    return channel


class Listener:
    """A dedicated psycopg 3 connection LISTENing on one channel.

    :param params: the ``psycopg.connect()`` arguments, e.g. from
        :meth:`connection_params`.
    :param channel: the channel to listen on (quoted here: any string works).

    Opening connects and runs ``LISTEN``; an error on the way closes the
    connection and propagates. :meth:`drain` and :meth:`wait` raise psycopg's
    errors when the connection fails: close it and open a new one (or poll).
    One thread at a time.
    """

    def __init__(self, params: dict[str, Any], channel: str) -> None:
        # psycopg is optional (psycopg2, or another database): imported only to listen.
        import psycopg
        from psycopg import sql

        self.channel = channel
        #: A notification with a payload arrived since its reader reset this (the ORM
        #: broker's delayed messages: see :data:`qhive_broker_orm.dialects.postgresql.LATER`).
        self.flagged = False
        #: The process that opened the connection (see :attr:`inherited`).
        self.pid = os.getpid()
        self.conn: psycopg.Connection = psycopg.connect(**params, autocommit=True)
        try:
            self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except BaseException:
            self.close()
            raise

    @staticmethod
    def available() -> bool:
        """psycopg >= 3.2 is installed (``Connection.notifies(timeout=...)``)."""
        try:
            # psycopg is optional: without it (psycopg2) nobody listens, they poll.
            import psycopg
        except ImportError:
            return False
        try:
            major, minor = (int(part) for part in psycopg.__version__.split(".")[:2])
        except ValueError:
            return False
        return (major, minor) >= (3, 2)

    @staticmethod
    def connection_params(alias: str, application_name: str) -> dict[str, Any]:
        """The ``psycopg.connect()`` arguments for database ``alias`` of
        ``settings.DATABASES``, as Django connects, with a 10 s connect timeout
        and ``application_name`` unless the settings give them."""
        params = dict(connections[alias].get_connection_params())
        for key in _DJANGO_ONLY_PARAMS:
            params.pop(key, None)
        params.setdefault("connect_timeout", 10)
        params.setdefault("application_name", application_name)
        return params

    @classmethod
    def for_database(cls, alias: str, channel: str, application_name: str) -> Listener:
        """Listen on ``channel`` of database ``alias`` (see :meth:`connection_params`)."""
        return cls(cls.connection_params(alias, application_name), channel)

    @property
    def inherited(self) -> bool:
        """This process got the listener through ``fork``: the connection is the parent's."""
        return self.pid != os.getpid()

    def drain(self) -> int:
        """Forget notifications already received (no round-trip); how many there were."""
        count = 0
        for notify in self.conn.notifies(timeout=0):
            count += 1
            self.flagged = self.flagged or bool(notify.payload)
        return count

    def wait(self, seconds: float) -> bool:
        """Sleep until a notification arrives or ``seconds`` pass; True if one came."""
        for notify in self.conn.notifies(timeout=seconds, stop_after=1):
            self.flagged = self.flagged or bool(notify.payload)
            return True
        return False

    def close(self) -> None:
        """Close the connection; errors are ignored. An inherited listener is only
        dropped: closing it would end the parent's session (and psycopg never
        finishes another process's connection when collecting it)."""
        if self.inherited:
            return
        with contextlib.suppress(Exception):
            self.conn.close()
