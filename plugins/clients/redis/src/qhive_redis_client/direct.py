"""Commands on the hot path, sent on a connection of the calling thread's own.

redis-py's ``Redis.execute_command`` checks a connection out of the pool, wraps the
call in its retry and observability machinery and parses the reply through the
command's callback: about 30 µs of CPU per command here, as much as the system calls
of the round trip itself. An enqueue, a claim or a result lookup is one command, so
that overhead was a fifth of the client's cost per task. :class:`DirectCommands`
sends those commands on a ``redis.Connection`` the thread keeps (built with the
client's own connection options: TLS, timeouts, credentials), and returns the raw
replies.

Behaviour matches the clients of :func:`qhive_redis_client.client.new_client`: a
broken connection is reopened and the command sent again once, at once; a second
failure raises redis-py's error, which the callers turn into their own.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from redis.exceptions import NoScriptError

__all__ = ["DirectCommands", "evalsha_command"]


def evalsha_command(script: redis.commands.core.Script, keys: list[Any],
                    args: list[Any]) -> tuple[Any, ...]:
    """The ``EVALSHA`` command of a registered script, for :meth:`DirectCommands.pipeline`."""
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


class DirectCommands:
    """Raw-reply commands of ``client``'s server on one connection per thread.

    Fork-safe: a connection opened by another process is left alone (the socket is
    the parent's) and a new one opened. :meth:`close` disconnects the calling
    thread's connection at once and every other thread's before its next command
    (never under a command another thread is reading the reply of).
    """

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        self._connection_class, self._kwargs = pool.connection_class, pool.connection_kwargs
        self._local = threading.local()
        self._generation = 0  # bumped by close(): older connections are dropped when next used

    def connection(self) -> redis.Connection:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or conn.pid != os.getpid() or local.generation != self._generation:
            if conn is not None and conn.pid == os.getpid():
                conn.disconnect()
            conn = local.conn = self._connection_class(**self._kwargs)
            local.generation = self._generation
        return conn

    def execute(self, *args: Any) -> Any:
        """Send one command, return its raw reply."""
        try:
            return self._round_trip(args)
        except redis.ConnectionError:  # dropped: reopen, send again once (not a timeout)
            return self._round_trip(args)

    def evalsha(self, script: redis.commands.core.Script, keys: list[Any],
                args: list[Any]) -> Any:
        """Run a registered script (loading it first if the server lost it)."""
        command = evalsha_command(script, keys, args)
        try:
            return self.execute(*command)
        except NoScriptError:
            self.execute("SCRIPT", "LOAD", script.script)
            return self.execute(*command)

    def pipeline(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` in one write and return their raw replies in order; a
        command the server refused has its ``redis.ResponseError`` in its place. The
        server runs them one after the other without waiting for this client: a
        command behind a blocking one (``BLMOVE``) runs as soon as that returns."""
        try:
            return self._pipelined(commands)
        except redis.ConnectionError:  # dropped: reopen, send again once (not a timeout)
            return self._pipelined(commands)

    def close(self) -> None:
        self._generation += 1
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.pid == os.getpid():
            conn.disconnect()
        self._local.conn = None

    def _round_trip(self, args: tuple[Any, ...]) -> Any:
        conn = self.connection()
        try:
            conn.send_command(*args)
            return conn.read_response()
        except redis.ResponseError:
            raise  # the whole reply was read: the connection is fine
        except BaseException:
            conn.disconnect()  # a reply half read must not be read by the next command
            raise

    def _pipelined(self, commands: tuple[tuple[Any, ...], ...]) -> list[Any]:
        conn = self.connection()
        replies: list[Any] = []
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            conn.disconnect()
            raise
        return replies
