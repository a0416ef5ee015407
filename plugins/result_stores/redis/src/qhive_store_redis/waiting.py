"""The waiting half of :meth:`RedisResultStore.wait`: a pub/sub connection that sleeps
until the save script announces a save (see :mod:`qhive_store_redis.scripts`).

A waiter holds one :class:`Subscriber` — a connection of its own, subscribed to the
store's ``<prefix>saved`` channel only while it waits. Once done it unsubscribes
(so nothing queues up on the connection while nobody listens, and the save script
stops publishing when nobody else does) and the store keeps it for the next waiter
of this process: a wait costs a ``SUBSCRIBE`` round trip and an ``UNSUBSCRIBE`` sent
without waiting for its answer, not a new connection.

A connection lost while waiting is re-established by redis-py, which subscribes
again; the confirmation that comes back tells the waiter that announcements may
have been missed, and it looks again.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

import redis
from qhive.announcements import names

if TYPE_CHECKING:
    from collections.abc import Collection

__all__ = ["CONFIRM_TIMEOUT", "Subscriber"]

#: Seconds Redis gets to confirm a SUBSCRIBE or UNSUBSCRIBE.
CONFIRM_TIMEOUT = 5.0


class Subscriber:
    """One pub/sub connection on a store's announcement channel, for one waiter at a time.

    Raises redis-py's errors; the store turns them into its own.
    """

    def __init__(self, client: redis.Redis, channel: str) -> None:
        #: The process that opened the connection: a copy inherited through fork is
        #: dropped, not closed (the socket is the parent's).
        self.pid = os.getpid()
        self.channel = channel.encode()
        self.pubsub = client.pubsub()

    @property
    def inherited(self) -> bool:
        return self.pid != os.getpid()

    def subscribe(self) -> None:
        """Subscribe, and return once Redis has confirmed it: every save that runs
        after this returns announces itself to this connection."""
        self.pubsub.subscribe(self.channel)
        self._until("subscribe")

    def unsubscribe(self) -> None:
        """Unsubscribe without waiting for the confirmation (the waiter is done):
        the next :meth:`subscribe` reads past it and whatever came before it."""
        self.pubsub.unsubscribe(self.channel)

    def news(self, seconds: float, wanted: Collection[str]) -> bool:
        """Sleep until an announcement names one of ``wanted`` (any announcement if it
        is empty), or until announcements may have been missed (the connection was
        re-established): True; False once ``seconds`` have passed."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=left)
            if message is None:
                continue
            if message["type"] == "subscribe":  # subscribed again on a new connection
                return True
            if message["type"] == "message" and names(message["data"], wanted):
                return True
        return False

    def close(self) -> None:
        """Close the connection (errors are ignored); one inherited through fork is
        only dropped."""
        if self.inherited:
            return
        with contextlib.suppress(Exception):
            self.pubsub.close()

    def _until(self, kind: str) -> None:
        end = time.monotonic() + CONFIRM_TIMEOUT
        while (left := end - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=left)
            if message is not None and message["type"] == kind:
                return
        raise redis.TimeoutError(f"Redis did not confirm the {kind.upper()} of "
                                 f"{self.channel.decode()!r} within {CONFIRM_TIMEOUT} s")
