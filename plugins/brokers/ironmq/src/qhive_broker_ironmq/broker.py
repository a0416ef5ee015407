"""``IronMQBroker``: Django Q2's IronMQ queue, with reservations as receipts.

A dequeue *reserves* messages (``POST …/reservations``): IronMQ hides them for the
reservation timeout, ``Q_CLUSTER['retry']`` in whole seconds (30 s to 24 h on the
service: a shorter or longer ``retry`` is raised or lowered into that range, with a
warning), and hands out each with a ``reservation_id``. Acknowledging deletes the
message by id *and* reservation id; a message never deleted comes back to the front
of the queue when its reservation runs out, with ``reserved_count`` + 1. So a
worker or cluster that dies loses nothing: its tasks run again after ``retry``.

* ``ack_id`` is ``"<message id>:<reservation id>"``. ``touch`` renews a reservation,
  and IronMQ answers with a *new* reservation id; this process remembers it by ack
  id (:class:`Renewals`), so that a later ``acknowledge``/``release`` of the same
  ack id uses it. A message whose reservation ran out is deleted without one when it
  waits again (a finished task then does not run twice); one reserved again by
  another consumer is left to it.
* ``dequeue(count, timeout)`` reserves up to 100 at once and long-polls (``wait``,
  at most 30 s per request): IronMQ answers as soon as a message can be taken, so
  an idle cluster is woken by a new task without polling.
* Delays are IronMQ's own: ``enqueue(delay=s)`` posts the message with ``delay``,
  ``release(ack_id, delay=s)`` releases it with ``delay`` — whole seconds (``s``
  rounded up), at most 604,800 (7 days, the service's limit: more is a ValueError).
  IronMQ keeps the message meanwhile; it then goes to the back of the queue. A plain
  enqueue or release sends no ``delay``.
* Payloads are bytes; IronMQ bodies are text: a body is ``"qhive1:"`` and the
  payload in base64. A body without that prefix (a message some other producer
  posted) is handed on as its UTF-8 bytes, and fails signature verification.
* ``queue_size()``: IronMQ's ``size`` counts reserved messages too (the client's own
  tests show it), so the waiting ones are counted by a peek (at most 100): exact up
  to 99 waiting, IronMQ's ``size`` from there on (then in flight ones count too).
  ``lock_size()`` is ``size`` minus that count while it is exact, else None; ``size``
  counts delayed messages too, so ``lock_size()`` counts them with those in flight.

Statistics are not kept here (``stats=False``): clusters keep them in the result store.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
from qhive.contracts import Broker, Capabilities, Message, ProcessLocal, checked_delivery
from qhive.errors import BrokerError, ConfigError, QhiveError

from qhive_broker_ironmq.client import (
    Transport,
    new_client,
    refusal,
    resolved,
    status_of,
)
from qhive_broker_ironmq.options import (
    PLUGIN,
    IronMQOptions,
    check_options,
    reservation_timeout,
)

if TYPE_CHECKING:
    import iron_mq
    from qhive.config import Config

__all__ = ["BODY_PREFIX", "IronMQBroker", "Renewals"]

logger = logging.getLogger("qhive.broker.ironmq")

#: IronMQ's limits: messages per reservation, post and batch delete; long poll seconds;
#: the ``delay`` of a post or a release (7 days).
MAX_BATCH = 100
MAX_WAIT = 30
MAX_DELAY = 604_800
#: ``enqueue_many`` posts at most this many bytes of bodies per request.
CHUNK_BYTES = 1 << 20
#: Every body the broker posts starts with this, then the payload in base64.
BODY_PREFIX = "qhive1:"

_warned: set[str] = set()


class Refused:
    """An error answer a caller expected (a message already gone: 404)."""

    __slots__ = ("said", "status")

    def __init__(self, status: int | None, said: str) -> None:
        self.status, self.said = status, said


class Renewals:
    """The reservation ids ``touch()`` got, by ack id, for every broker of this process.

    The cluster touches and acknowledges from its monitor thread, and releases from its
    sentinel, each with a broker of its own: they share this. An entry is dropped when
    its message is finished or released, or once its reservation has run out.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[tuple[str, str], tuple[str, float]] = {}

    def current(self, scope: str, ack_id: str) -> str | None:
        with self._lock:
            found = self._current.get((scope, ack_id))
        return found[0] if found else None

    def renewed(self, scope: str, ack_id: str, reservation_id: str, seconds: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._current[(scope, ack_id)] = (reservation_id, now + seconds)
            for key in [k for k, (_, until) in self._current.items() if until < now]:
                del self._current[key]

    def forget(self, scope: str, ack_ids: Iterable[str]) -> None:
        with self._lock:
            for ack_id in ack_ids:
                self._current.pop((scope, ack_id), None)

    def forget_queue(self, scope: str) -> None:
        with self._lock:
            for key in [k for k in self._current if k[0] == scope]:
                del self._current[key]


_RENEWALS = Renewals()


class IronMQBroker(ProcessLocal, Broker):
    """The IronMQ broker.

    :param queue: the queue (cluster name).
    :param config: the cluster's config (``retry``: the reservation timeout).
    :param iron_mq: Django Q2's ``Q_CLUSTER["iron_mq"]``: keyword arguments of
        ``iron_mq.IronMQ`` (``token``, ``project_id``, ``host``, ``port``, ``protocol``,
        ``api_version``, ``config_file``, ``keystone``, ``cloud``, ``path_prefix``),
        plus ``request_timeout`` (seconds per HTTP request, default 10) and
        ``min_reservation_timeout`` (the shortest reservation the service grants,
        default 30). Credentials not given are read as ``iron_core`` reads them: the
        ``IRON_*`` / ``IRON_MQ_*`` environment variables, ``iron.json``.
    """

    builds_offline = True  # settings are checked here; the client connects on use

    capabilities = Capabilities(
        receipts=True, bulk=True, blocking=True, fifo=True, stats=False, shared=True, touch=True,
        delay=True,
    )

    def __init__(self, queue: str = "default", *, config: Config | None = None,
                 iron_mq: Mapping[str, Any] | None = None) -> None:
        super().__init__(queue, config=config)
        if not isinstance(queue, str) or not queue:
            raise ConfigError(f"{PLUGIN}: the queue name must be a non-empty string, got "
                              f"{queue!r}", key="name")
        self.options: IronMQOptions = check_options(iron_mq)
        self.reservation_timeout, warning = reservation_timeout(
            self.config.retry, self.options.min_reservation_timeout)
        if warning and warning not in _warned:  # once per process, not per copy
            _warned.add(warning)
            logger.warning(warning)
        self._init_local_state()
        mq, self._transport = new_client(self.options)  # checks credentials; no connection
        self._mq = mq
        self._resolved = resolved(mq)
        client = mq.client
        self.address = (f"{client.protocol}://{client.host}:{client.port}"
                        f"{client.path_prefix or ''}")
        self.project_id = str(client.project_id)
        # The client puts the name into the URL as it is: quote it so any name arrives.
        self._scope = f"{client.base_url}queues/{quote(queue, safe='')}"

    #: Left behind by a pickled copy, which makes its own (ProcessLocal).
    local_state = ("_mq", "_transport", "_queue", "_lock")

    def _init_local_state(self) -> None:
        self._mq: iron_mq.IronMQ | None = None
        self._transport: Transport | None = None
        self._queue: iron_mq.Queue | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} queue={self.queue!r} at {self.address}>"

    # -- the client

    def _client_queue(self) -> iron_mq.Queue:
        """The client's ``Queue`` (built on first use, from the settings resolved when
        this broker was made; it connects when used)."""
        found = self._queue
        if found is None:
            with self._lock:
                if self._queue is None:
                    if self._mq is None:
                        # the same client as first built, without reading env or files again
                        options = IronMQOptions(self._resolved, self.options.request_timeout,
                                                self.options.min_reservation_timeout)
                        self._mq, self._transport = new_client(options)
                    self._queue = self._mq.queue(quote(self.queue, safe=""))
                found = self._queue
        return found

    def close(self) -> None:
        """Close the HTTP connections; the next call opens new ones."""
        transport = self._transport
        self._mq, self._transport, self._queue = None, None, None
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """The client's and requests' errors as qhive's, in one line naming the fix."""
        try:
            yield
        except QhiveError:  # already one of ours (a ConfigError is a ValueError too)
            raise
        except requests.RequestException as exc:
            raise refusal(exc, what, self.address, queue=self.queue, project=self.project_id,
                          timeout=self.options.request_timeout) from exc
        except (ValueError, KeyError, TypeError) as exc:  # an answer not shaped as IronMQ's
            raise BrokerError(f"{PLUGIN}: {what} failed: IronMQ at {self.address} sent an "
                              f"answer the broker cannot read ({type(exc).__name__}: {exc})"
                              ) from exc

    def _call(self, what: str, method: str, *args: Any, ignore: tuple[int, ...] = (),
              **kwargs: Any) -> Any:
        """``Queue.<method>(*args, **kwargs)``'s answer. An error answer with a status in
        ``ignore`` returns :class:`Refused` instead of raising; a 404 only when IronMQ
        says the queue or message is not found (not the project, not a wrong path)."""
        with self._errors(what):
            try:
                return getattr(self._client_queue(), method)(*args, **kwargs)
            except requests.HTTPError as exc:
                status, said = status_of(exc), _said(exc).lower()
                expected = status != 404 or (
                    ("queue" in said or "message" in said) and "project" not in said)
                if status in ignore and expected:
                    return Refused(status, said)
                raise

    # -- enqueue

    def enqueue(self, payload: bytes, *, delay: float = 0.0) -> str:
        """Post one message; with ``delay`` (seconds, rounded up, at most 7 days) IronMQ
        keeps it from being reserved until then."""
        if delay != 0:
            return self._enqueue_delayed(payload, _delay_seconds(delay))
        return self.enqueue_many([payload])[0]

    def _enqueue_delayed(self, payload: bytes, seconds: int) -> str:
        reply = self._call("enqueue", "post", {"body": _body(payload), "delay": seconds})
        with self._errors("enqueue"):
            [got] = reply["ids"]
        return str(got)

    def enqueue_many(self, payloads: Iterable[bytes]) -> list[str]:
        """Post in requests of at most 100 messages / 1 MiB; each request is atomic,
        the whole batch is not."""
        ids: list[str] = []
        for chunk in _chunks([_body(p) for p in payloads]):
            reply = self._call("enqueue", "post", *({"body": body} for body in chunk))
            with self._errors("enqueue"):
                got = [str(i) for i in reply["ids"]]
            if len(got) != len(chunk):
                raise BrokerError(f"{PLUGIN}: enqueue: IronMQ at {self.address} returned "
                                  f"{len(got)} ids for {len(chunk)} messages")
            ids.extend(got)
        return ids

    # -- dequeue

    def dequeue(self, count: int = 1, timeout: float = 0.0) -> list[Message]:
        """Reserve up to ``count`` (at most 100) for ``retry`` seconds. Long-polls in
        whole seconds (IronMQ's ``wait``), at most 30 s per request; a fraction of a
        second is not waited for (``timeout=0.5``: one look)."""
        n = min(max(1, int(count)), MAX_BATCH)
        remaining = max(float(timeout or 0.0), 0.0)
        deadline = time.monotonic() + remaining
        while True:
            wait = min(MAX_WAIT, int(remaining))
            got = self._reserve(n, wait)
            remaining = deadline - time.monotonic()
            if got or wait == 0 or remaining < 1:
                return got

    def _reserve(self, n: int, wait: int) -> list[Message]:
        reply = self._call("dequeue", "reserve", max=n, timeout=self.reservation_timeout,
                           wait=wait, ignore=(404,))
        if isinstance(reply, Refused):  # "Queue not found": posting creates queues
            self._create_queue()
            reply = self._call("dequeue", "reserve", max=n, timeout=self.reservation_timeout,
                               wait=wait, ignore=(404,))
            if isinstance(reply, Refused):  # deleted again meanwhile
                return []
        with self._errors("dequeue"):
            return [Message(f"{m['id']}:{m['reservation_id']}", _payload(m["body"]),
                            int(m["reserved_count"])) for m in reply["messages"]]

    def _create_queue(self) -> None:
        with self._errors("dequeue (creating the queue)"):
            try:
                self._mq_of_queue().create_queue(quote(self.queue, safe=""))
            except requests.HTTPError as exc:
                if status_of(exc) != 409 and "exist" not in _said(exc).lower():
                    raise  # else another consumer made it first

    def _mq_of_queue(self) -> iron_mq.IronMQ:
        self._client_queue()
        assert self._mq is not None
        return self._mq

    # -- finishing messages

    def acknowledge(self, ack_id: str) -> None:
        self.acknowledge_many([ack_id])

    def acknowledge_many(self, ack_ids: Iterable[str]) -> None:
        """Delete in batches of 100 (``DELETE …/messages`` with ids and reservation ids).
        A batch IronMQ refuses (one reservation ran out) is deleted one by one."""
        ids = list(dict.fromkeys(ack_ids))
        for start in range(0, len(ids), MAX_BATCH):
            chunk = ids[start:start + MAX_BATCH]
            if len(chunk) == 1:
                self._delete_one(chunk[0], "acknowledge")
                continue
            items = [{"id": m, "reservation_id": r} for m, r in map(self._held, chunk)]
            done = self._call("acknowledge", "delete_multiple", messages={"messages": items},
                              ignore=(403, 404))
            if isinstance(done, Refused):
                for ack_id in chunk:
                    self._delete_one(ack_id, "acknowledge")
            _RENEWALS.forget(self._scope, chunk)

    def fail(self, ack_id: str) -> None:
        self._delete_one(ack_id, "fail")

    def delete(self, ack_id: str) -> None:
        self._delete_one(ack_id, "delete")

    def _delete_one(self, ack_id: str, what: str) -> None:
        message_id, reservation_id = self._held(ack_id)
        done = self._call(what, "delete", message_id, reservation_id, ignore=(403, 404))
        if isinstance(done, Refused) and done.status == 403:
            # Its reservation ran out. Waiting again: delete it without one, so that a
            # finished task does not run twice. Reserved again: another consumer has it.
            again = self._call(what, "delete", message_id, ignore=(403, 404))
            if isinstance(again, Refused) and again.status == 403:
                logger.warning("%s: %s of message %s came after its reservation ran out "
                               "(retry=%s s): another consumer has it now and runs it again",
                               PLUGIN, what, message_id, self.config.retry)
        _RENEWALS.forget(self._scope, [ack_id])

    def touch(self, ack_ids: Iterable[str]) -> None:
        """Renew each reservation for another ``retry`` seconds (one request each: IronMQ
        has no batch touch). IronMQ gives a new reservation id: it is remembered."""
        for ack_id in ack_ids:
            message_id, reservation_id = self._held(ack_id)
            reply = self._call("touch", "touch", message_id, reservation_id,
                               timeout=self.reservation_timeout, ignore=(403, 404))
            if isinstance(reply, Refused):  # no longer ours: left alone
                _RENEWALS.forget(self._scope, [ack_id])
                continue
            with self._errors("touch"):
                _RENEWALS.renewed(self._scope, ack_id, str(reply["reservation_id"]),
                                  self.reservation_timeout)

    def release(self, ack_id: str, *, delay: float = 0.0) -> None:
        """Put a reserved message back at once — IronMQ puts it at the front of the queue
        — or after ``delay`` seconds (rounded up, at most 7 days), at the back; its
        reservation still counts in ``reserved_count``."""
        seconds = 0 if delay == 0 else _delay_seconds(delay)
        message_id, reservation_id = self._held(ack_id)
        self._call("release", "release", message_id, reservation_id, delay=seconds,
                   ignore=(403, 404))
        _RENEWALS.forget(self._scope, [ack_id])

    def _held(self, ack_id: str) -> tuple[str, str]:
        """(message id, current reservation id) of an ack id."""
        message_id, sep, reservation_id = str(ack_id).partition(":")
        if not sep or not message_id or not reservation_id:
            raise BrokerError(f"{PLUGIN}: {ack_id!r} is not an ack id of this broker "
                              f"('<message id>:<reservation id>')")
        return message_id, _RENEWALS.current(self._scope, ack_id) or reservation_id

    # -- sizes and queues

    def queue_size(self) -> int:
        waiting = self._peek()
        return waiting if waiting < MAX_BATCH else self._size()

    def lock_size(self) -> int | None:
        size, waiting = self._size(), self._peek()
        return max(0, size - waiting) if waiting < MAX_BATCH else None

    def _size(self) -> int:
        info = self._call("queue_size", "info", ignore=(404,))
        with self._errors("queue_size"):
            return 0 if isinstance(info, Refused) else int(info["size"])

    def _peek(self) -> int:
        reply = self._call("queue_size", "peek", max=MAX_BATCH, ignore=(404,))
        with self._errors("queue_size"):
            return 0 if isinstance(reply, Refused) else len(reply["messages"])

    def purge_queue(self) -> None:
        """Clear the queue: waiting and reserved messages."""
        self._call("purge_queue", "clear", ignore=(404,))
        _RENEWALS.forget_queue(self._scope)

    def delete_queue(self) -> None:
        self._call("delete_queue", "delete_queue", ignore=(404,))
        _RENEWALS.forget_queue(self._scope)

    # -- the service

    def ping(self) -> bool:
        """Ask IronMQ about this queue: True if it answers and takes the token (a queue
        not created yet is fine); else the error naming what to fix."""
        self._call("ping", "info", ignore=(404,))
        return True

    def info(self) -> str:
        return f"IronMQ at {self.address} (project {self.project_id})"


# --------------------------------------------------------------------------- helpers


def _body(payload: Any) -> str:
    if isinstance(payload, (bytearray, memoryview)):
        payload = bytes(payload)
    if not isinstance(payload, bytes):
        raise TypeError(f"the IronMQ broker queues bytes, got {type(payload).__name__}")
    return BODY_PREFIX + base64.b64encode(payload).decode("ascii")


def _delay_seconds(delay: Any) -> int:
    """A ``delay`` as IronMQ's: whole seconds, rounded up (never taken early)."""
    seconds = math.ceil(checked_delivery(PLUGIN, delay)[0])
    if seconds > MAX_DELAY:
        raise ValueError(f"{PLUGIN}: a delay of {delay:g} s is over IronMQ's limit of "
                         f"{MAX_DELAY} s (7 days); nothing was sent")
    return seconds


def _payload(body: str) -> bytes:
    if body.startswith(BODY_PREFIX):
        try:
            return base64.b64decode(body[len(BODY_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            pass
    return body.encode("utf-8", "surrogateescape")  # not ours: it fails verification


def _chunks(bodies: list[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for body in bodies:
        if chunk and (len(chunk) >= MAX_BATCH or size + len(body) > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(body)
        size += len(body)
    if chunk:
        yield chunk


def _said(exc: requests.HTTPError) -> str:
    with contextlib.suppress(Exception):
        return str(exc.response.json().get("msg", ""))
    return ""
