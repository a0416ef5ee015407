"""``DisqueBroker``: Django Q's Disque broker — a job stays with Disque until the
cluster has saved its result and acknowledged it.

Disque is a job queue with receipts built in: a job handed out by ``GETJOB`` is
queued again by Disque itself if no ``ACKJOB`` comes within its ``RETRY`` seconds,
and each job is copied to several nodes (``REPLICATE``), so it survives the loss of
one. The broker sends Disque's commands through redis-py (Disque speaks Redis's
protocol), payloads as raw bytes:

* enqueue — ``ADDJOB <queue> <payload> <ms> RETRY <retry> TTL <ttl> [REPLICATE <n>]``,
  pipelined for ``enqueue_many``; ``RETRY`` is the cluster's ``retry`` rounded up;
* dequeue — ``GETJOB TIMEOUT <ms> COUNT <n> WITHCOUNTERS FROM <queue>``: it blocks in
  the server until a job arrives (``NOHANG`` for a dequeue without a wait), and its
  counters give ``deliveries`` (1 + ``nacks`` + ``additional-deliveries``); then one
  pipelined ``WORKING`` per job handed out, since Disque counts ``RETRY`` from when a
  job was queued, not from when it was handed out;
* acknowledge / acknowledge_many / fail / delete — one ``ACKJOB`` (``FASTACK`` with
  ``disque_fastack``) for any number of ids;
* release — ``NACK``: the job is queued again at once;
* touch — ``WORKING`` (Disque postpones the job's next delivery by ``RETRY``), sent
  only for jobs ``SHOW`` says are still ``active``: ``WORKING`` would also take a job
  waiting in the queue out of it;
* queue_size — ``QLEN``; lock_size — ``JSCAN`` of the jobs ``active`` on a
  one-node Disque (unknown, None, with several nodes: there the copies of queued jobs
  are ``active`` too);
* purge_queue / delete_queue — ``JSCAN`` the queue's jobs and ``FASTACK`` them
  (Disque forgets a queue once it is empty);
* ping — ``PING``; info — the version from ``INFO``.

Disque keeps no statistics: ``stats=False``, the cluster keeps them in its result store.

No ``delay`` either: ``ADDJOB … DELAY`` delays a new job, but a job handed out cannot be
given back for a chosen time — ``NACK`` / ``ENQUEUE`` queue it at once, ``WORKING``
postpones it by its own ``RETRY`` only — and a new delayed copy would restart its
delivery counters (``max_attempts`` would never stop a task retried with a backoff). The
contract asks for both, so the broker declares neither.
Which node is used, and the next one when it fails: :mod:`qhive_broker_disque.connection`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from qhive.contracts import Broker, Capabilities, Message
from qhive.errors import ConfigError

from qhive_broker_disque.connection import NodeConnection
from qhive_broker_disque.options import PLUGIN, parse_options

if TYPE_CHECKING:
    import redis
    from qhive.config import Config

__all__ = ["DisqueBroker"]

T = TypeVar("T")

logger = logging.getLogger("qhive.broker.disque")

#: How long ADDJOB waits for its copies on other nodes, in ms (then NOREPL).
ADD_TIMEOUT_MS = 2000
#: The longest one GETJOB blocks: below the socket timeout, so that a wait is never
#: mistaken for a node that stopped answering.
MAX_BLOCK = 1.0
#: Ids per ACKJOB / FASTACK / NACK command, payloads per pipelined batch of ADDJOBs.
CHUNK = 1000
CHUNK_BYTES = 4 << 20
#: What ``SHOW`` says of a job handed out and not acknowledged.
ACTIVE = b"active"


class DisqueBroker(Broker):
    """The Disque broker.

    :param queue: the queue (the cluster name).
    :param config: the cluster's config (``retry``).
    :param disque_nodes: the nodes, ``"host:port"`` each — Django Q's
        ``Q_CLUSTER["disque_nodes"]``.
    :param disque_auth: the nodes' password (``requirepass``) — ``Q_CLUSTER["disque_auth"]``.
    :param disque_fastack: acknowledge with ``FASTACK`` (faster, more likely to deliver a
        job twice when nodes fail) — ``Q_CLUSTER["disque_fastack"]``.
    :param replicate: nodes that keep a copy of each job; None: Disque's default (every
        node of its cluster, at most 3).
    :param ttl: seconds a job lives, delivered or not (default 30 days).
    """

    builds_offline = True  # settings are checked here; the client connects on use

    capabilities = Capabilities(
        receipts=True, bulk=True, blocking=True, fifo=True, stats=False, shared=True, touch=True
    )

    def __init__(
        self, queue: str = "default", *, config: Config | None = None,
        disque_nodes: Iterable[str] | None = None, disque_auth: str | None = None,
        disque_fastack: bool = False, replicate: int | None = None, ttl: int | None = None,
    ) -> None:
        super().__init__(queue, config=config)
        if not isinstance(queue, str) or not queue:
            raise ConfigError(f"{PLUGIN}: the queue name must be a non-empty string, got "
                              f"{queue!r}", key="name")
        self.options = parse_options(disque_nodes=disque_nodes, disque_auth=disque_auth,
                                     disque_fastack=disque_fastack, replicate=replicate,
                                     ttl=ttl, retry=self.config.retry)
        self.connection = NodeConnection(self.options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} queue={self.queue!r} at {self.connection.node}>"

    def _run(self, what: str, command: Callable[[redis.Redis], T]) -> T:
        return self.connection.run(what, command)

    def _call(self, what: str, *args: Any) -> Any:
        return self._run(what, lambda client: client.execute_command(*args))

    # -- enqueue

    def _addjob(self, payload: bytes) -> list[Any]:
        args: list[Any] = ["ADDJOB", self.queue, payload, ADD_TIMEOUT_MS,
                           "RETRY", self.retry_seconds, "TTL", self.options.ttl]
        if self.options.replicate is not None:
            args += ["REPLICATE", self.options.replicate]
        return args

    @property
    def retry_seconds(self) -> int:
        """The job's RETRY: whole seconds, rounded up (a later redelivery, never an earlier one)."""
        return max(1, math.ceil(self.config.retry))

    def enqueue(self, payload: bytes) -> str:
        job = self._call("enqueue", *self._addjob(_payload(payload)))
        return job.decode()

    def enqueue_many(self, payloads: Iterable[bytes]) -> list[str]:
        batch = [_payload(p) for p in payloads]
        ids: list[str] = []
        for chunk in _chunks(batch):
            def add(client: redis.Redis, chunk: list[bytes] = chunk) -> list[Any]:
                pipe = client.pipeline(transaction=False)
                for payload in chunk:
                    pipe.execute_command(*self._addjob(payload))
                # not raise_on_error: redis-py would quote the command, payload and all
                replies = pipe.execute(raise_on_error=False)
                for reply in replies:
                    if isinstance(reply, Exception):
                        raise reply
                return replies

            ids.extend(job.decode() for job in self._run("enqueue_many", add))
        return ids

    # -- dequeue

    def dequeue(self, count: int = 1, timeout: float = 0.0) -> list[Message]:
        count = max(1, int(count))
        deadline = time.monotonic() + max(float(timeout or 0.0), 0.0)
        while True:
            remaining = deadline - time.monotonic()
            wait = min(remaining, MAX_BLOCK)
            # TIMEOUT 0 would block for ever: only ever a positive number of ms here.
            block = (["TIMEOUT", max(1, round(wait * 1000))] if wait >= 0.001
                     else ["NOHANG"])
            args = ["GETJOB", *block, "COUNT", count, "WITHCOUNTERS", "FROM", self.queue]
            reply = self._run("dequeue", lambda client, args=args: _take(client, args))
            if reply or remaining <= MAX_BLOCK:
                return [_message(job) for job in reply]

    # -- finishing messages

    def _ack_command(self) -> str:
        return "FASTACK" if self.options.fastack else "ACKJOB"

    def acknowledge(self, ack_id: str) -> None:
        self._call("acknowledge", self._ack_command(), ack_id)

    def acknowledge_many(self, ack_ids: Iterable[str]) -> None:
        ids = list(ack_ids)
        for start in range(0, len(ids), CHUNK):
            self._call("acknowledge_many", self._ack_command(), *ids[start:start + CHUNK])

    def fail(self, ack_id: str) -> None:
        self._call("fail", self._ack_command(), ack_id)

    def delete(self, ack_id: str) -> None:
        """Remove a job, waiting or handed out (``ACKJOB`` takes it out of the queue)."""
        self._call("delete", self._ack_command(), ack_id)

    def release(self, ack_id: str) -> None:
        """Queue a job handed out again at once (``NACK``: its ``nacks`` counter, and so
        its next ``deliveries``, goes up by one). A job not handed out is left alone."""
        self._call("release", "NACK", ack_id)

    def touch(self, ack_ids: Iterable[str]) -> None:
        """Postpone the next delivery of jobs still handed out by ``retry`` (``WORKING``).
        Jobs acknowledged, unknown or waiting again in the queue are left alone. Disque
        refuses ``WORKING`` once half a job's ``ttl`` has passed: such a job is logged and
        comes back after ``retry``."""
        ids = list(ack_ids)
        if ids:
            refused = self._run("touch", lambda client: _working(client, ids))
            for ack_id, error in refused:
                logger.warning("%s: could not postpone job %s (%s); it is delivered again "
                               "after retry", PLUGIN, ack_id, error)

    # -- sizes and queues

    def queue_size(self) -> int:
        """Jobs waiting in the queue of the node in use (Disque counts per node)."""
        return int(self._call("queue_size", "QLEN", self.queue))

    def lock_size(self) -> int | None:
        """Jobs handed out and not acknowledged, on a one-node Disque; None with several
        nodes (there every copy of a job that waits elsewhere is ``active`` too)."""
        def count(client: redis.Redis) -> int | None:
            hello = client.execute_command("HELLO")  # version, own id, then every node
            if len(hello) > 3:
                return None
            return sum(1 for _ in _scan(client, self.queue, "STATE", "active"))

        return self._run("lock_size", count)

    def purge_queue(self) -> None:
        """Remove every job of the queue the node in use knows, waiting or handed out:
        ``FASTACK`` deletes each on every node that has a copy."""
        def purge(client: redis.Redis) -> None:
            batch: list[bytes] = []
            for job in _scan(client, self.queue):
                batch.append(job)
                if len(batch) >= CHUNK:
                    client.execute_command("FASTACK", *batch)
                    batch = []
            if batch:
                client.execute_command("FASTACK", *batch)

        self._run("purge_queue", purge)

    def delete_queue(self) -> None:
        """Disque drops a queue by itself once it is empty: this empties it."""
        self.purge_queue()

    # -- the server

    def ping(self) -> bool:
        return bool(self._call("ping", "PING"))

    def info(self) -> str:
        server = self._run("info", lambda client: client.info("server"))
        return f"Disque {server.get('disque_version', '?')} at {self.connection.node}"

    def close(self) -> None:
        self.connection.close()


# --------------------------------------------------------------------------- helpers


def _payload(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"the Disque broker queues bytes, got {type(value).__name__}")


def _chunks(batch: list[bytes]) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    size = 0
    for payload in batch:
        if chunk and (len(chunk) >= CHUNK or size + len(payload) > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(payload)
        size += len(payload)
    if chunk:
        yield chunk


def _take(client: redis.Redis, getjob: list[Any]) -> list[Any]:
    """``GETJOB``, then ``WORKING`` for what it handed out, in the next round trip.

    Disque times a job's ``RETRY`` from when it was last queued, not from when it was
    handed out: a job that waited in the queue longer than ``retry`` could come back at
    once. ``WORKING`` restarts the clock: ``retry`` seconds from now, as promised.
    """
    jobs = client.execute_command(*getjob) or []
    if jobs:
        pipe = client.pipeline(transaction=False)
        for job in jobs:
            pipe.execute_command("WORKING", job[1])
        for job, reply in zip(jobs, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, Exception):  # TOOLATE: half its ttl is gone
                logger.warning("%s: job %s is delivered again after less than retry "
                               "seconds if not acknowledged (%s)", PLUGIN, job[1].decode(),
                               reply)
    return jobs


def _message(job: list[Any]) -> Message:
    """``[queue, id, body, "nacks", n, "additional-deliveries", m]`` as a Message."""
    counters = dict(zip(job[3::2], job[4::2], strict=True))
    again = int(counters.get(b"nacks", 0)) + int(counters.get(b"additional-deliveries", 0))
    return Message(job[1].decode(), job[2], 1 + again)


def _scan(client: redis.Redis, queue: str, *filters: str) -> Iterator[bytes]:
    """The ids of the jobs of ``queue`` this node has (``JSCAN``), matching ``filters``."""
    cursor: Any = 0
    while True:
        cursor, jobs = client.execute_command("JSCAN", cursor, "COUNT", CHUNK, "QUEUE", queue,
                                              *filters, "REPLY", "id")
        yield from jobs
        if int(cursor) == 0:
            return


def _working(client: redis.Redis, ids: list[str]) -> list[tuple[str, Exception]]:
    """``WORKING`` for the jobs of ``ids`` that are handed out; the refusals."""
    pipe = client.pipeline(transaction=False)
    for ack_id in ids:
        pipe.execute_command("SHOW", ack_id)
    shown = pipe.execute(raise_on_error=False)
    active = [i for i, job in zip(ids, shown, strict=True) if _state(job) == ACTIVE]
    for ack_id in active:
        pipe.execute_command("WORKING", ack_id)
    replies = pipe.execute(raise_on_error=False) if active else []
    # NOJOB / ACKED: finished meanwhile, nothing to postpone.
    return [(i, r) for i, r in zip(active, replies, strict=True) if isinstance(r, Exception)
            and not str(r).startswith(("NOJOB", "ACKED"))]


def _state(job: Any) -> bytes | None:
    """The ``state`` field of a ``SHOW`` reply (a flat list of names and values)."""
    if not isinstance(job, list):
        return None  # unknown job (None) or an error such as BADID
    fields = dict(zip(job[::2], job[1::2], strict=False))
    return fields.get(b"state")
