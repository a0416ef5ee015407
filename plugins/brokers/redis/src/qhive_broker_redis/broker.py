"""``RedisBroker``: Django Q2's Redis queue, with delivery receipts.

Django Q2's Redis broker ``BLPOP``s a task off a list: from then on the task
lives only in the memory of the cluster that took it, and a worker or cluster
that dies takes it along. Here a message stays in Redis until it is
acknowledged; a message never acknowledged comes back after ``retry``
seconds. Each queue is six keys sharing the hash tag ``{<queue>}``:

* ``qhive:{q}:waiting`` — LIST of the ids of priority 0, oldest at the head;
* ``qhive:{q}:prioritized`` — ZSET of the ids of other priorities, highest first;
* ``qhive:{q}:delayed`` — ZSET id → when it is due (ms, server clock);
* ``qhive:{q}:payloads`` — HASH id → payload;
* ``qhive:{q}:deliveries`` — HASH id → how often it was handed out;
* ``qhive:{q}:inflight`` — ZSET id → receipt deadline (ms, server clock);

plus ``qhive:{q}:seq``, the counter the ids are made from. The steps touching
several keys are Lua scripts (:mod:`qhive_broker_redis.scripts`): a claim moves
expired receipts and due delayed messages back to be waiting, takes up to
``count`` ids (priorities above 0, then the list, then those below 0) and
records their receipts, in one atomic round trip. A plain message (priority 0,
no delay) only ever touches the list, and the claim sees that the two ZSETs
are absent with one ``EXISTS``.

An idle ``dequeue(timeout=…)`` does not poll: it blocks in ``BLMOVE waiting
waiting LEFT LEFT`` — moving the head of the list onto itself, a no-op that
returns to every blocked client as soon as the list is not empty — and then
claims. Each wait lasts at most a second, and no longer than until the next
receipt or delayed message falls due (the claim that found nothing says when),
so those are taken at once while nothing is enqueued. A message that does not
go onto the list (a priority, a delay under a second) pushes a wake token onto
it if it is empty, to end those waits.

Statistics are plain keys with an expiry, found through an index (a ZSET of
stat keys scored by expiry) instead of Django Q2's blocking ``KEYS``.

Redis errors become :class:`qhive.errors.BrokerConnectionError` (server
unreachable, naming its address) or :class:`qhive.errors.BrokerError`; the
client reconnects by itself once the server is back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import redis
from qhive.contracts import Broker, Capabilities, Message, ProcessLocal, checked_delivery
from qhive.errors import BrokerConnectionError, BrokerError, ConfigError
from qhive_redis_client.client import address, check_options, new_client
from qhive_redis_client.direct import DirectCommands, evalsha_command

from qhive_broker_redis import scripts

if TYPE_CHECKING:
    from qhive.config import Config

__all__ = ["KEY_PREFIX", "QueueKeys", "RedisBroker"]

#: Every key the broker writes starts with this.
KEY_PREFIX = "qhive"
#: Statistics share one hash tag, so that the index and the values sit in one slot.
STATS_INDEX = f"{KEY_PREFIX}:{{stats}}:index"
STATS_VALUE = f"{KEY_PREFIX}:{{stats}}:value:"

#: How the broker names itself in errors.
PLUGIN = "Redis broker"
#: The longest one blocking wait lasts (expired receipts are recovered between waits).
MAX_BLOCK = 1.0
#: Redis reads a blocking timeout of 0 as "for ever": never send less than this.
MIN_BLOCK = 0.01
#: A message delayed by less than this (ms) wakes the blocked consumers, whose waits
#: would end after it is due; a longer delay is seen by their next look (MAX_BLOCK).
WAKE_BELOW_MS = round(MAX_BLOCK * 1000)
#: ``enqueue_many`` sends at most this many payloads / bytes per script call.
CHUNK_MESSAGES = 1000
CHUNK_BYTES = 4 << 20


@dataclasses.dataclass(frozen=True)
class QueueKeys:
    """The Redis keys of one queue."""

    waiting: str
    payloads: str
    deliveries: str
    inflight: str
    seq: str
    prioritized: str
    delayed: str

    @classmethod
    def of(cls, queue: str) -> QueueKeys:
        base = f"{KEY_PREFIX}:{{{queue}}}:"
        return cls(*(base + f.name for f in dataclasses.fields(cls)))

    @property
    def messages(self) -> tuple[str, ...]:
        """The keys holding messages (all but the id counter)."""
        return (self.waiting, self.prioritized, self.delayed, self.payloads,
                self.deliveries, self.inflight)


class _Scripts:
    """The Lua scripts, registered on one client (no round trip until first called),
    and the client's :class:`DirectCommands` for the commands of every task."""

    def __init__(self, client: redis.Redis) -> None:
        self.direct = DirectCommands(client)
        self.enqueue = client.register_script(scripts.ENQUEUE)
        self.enqueue_with = client.register_script(scripts.ENQUEUE_WITH)
        self.queue_size = client.register_script(scripts.QUEUE_SIZE)
        self.claim = client.register_script(scripts.CLAIM)
        self.release = client.register_script(scripts.RELEASE)
        self.touch = client.register_script(scripts.TOUCH)
        self.set_stat = client.register_script(scripts.SET_STAT)
        self.live_stats = client.register_script(scripts.LIVE_STATS)


class RedisBroker(ProcessLocal, Broker):
    """The Redis broker.

    :param queue: the queue (cluster name).
    :param config: the cluster's config (``retry``).
    :param redis: ``redis.Redis`` keyword arguments, or a URL for
        ``redis.Redis.from_url`` (``redis://``, ``rediss://``, ``unix://``) —
        Django Q2's ``Q_CLUSTER["redis"]``. Default: 127.0.0.1:6379, db 0.
    :param django_redis: the alias of a django-redis cache whose connection to
        use — Django Q2's ``Q_CLUSTER["django_redis"]``; wins over ``redis``.
    """

    capabilities = Capabilities(
        receipts=True, bulk=True, blocking=True, fifo=True, stats=True, shared=True, touch=True,
        delay=True, priority=True,
    )

    def __init__(
        self, queue: str = "default", *, config: Config | None = None,
        redis: Mapping[str, Any] | str | None = None, django_redis: str | None = None,
    ) -> None:
        # ``redis`` (the Q_CLUSTER key) hides the module here: the helpers use it.
        super().__init__(queue, config=config)
        if not isinstance(queue, str) or not queue:
            raise ConfigError(f"Redis broker: the queue name must be a non-empty string, "
                              f"got {queue!r}", key="name")
        self.keys = QueueKeys.of(queue)
        self.django_redis = _check_django_redis(django_redis)
        # As in Django Q2, a django-redis alias wins; the options are then unused.
        self.redis_options = None if self.django_redis else check_options(redis, plugin=PLUGIN)
        self._info: str | None = None
        self._init_local_state()
        if self.django_redis is None:
            self._client = self._build_client()  # checks the options; opens no connection

    #: Left behind by a pickled copy, which makes its own (ProcessLocal).
    local_state = ("_client", "_scripts", "_client_lock")

    def _init_local_state(self) -> None:
        self._client: redis.Redis | None = None
        self._scripts: _Scripts | None = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} queue={self.queue!r} at {self.address}>"

    # -- the client

    def _build_client(self) -> redis.Redis:
        if self.django_redis is not None:
            # django-redis is the [django] extra: only Django Q's django_redis key needs it
            from django_redis import get_redis_connection

            try:
                client = get_redis_connection(self.django_redis)
            except NotImplementedError:
                raise ConfigError(
                    f"Redis broker: the cache {self.django_redis!r} of "
                    f"Q_CLUSTER['django_redis'] gives no Redis connection; use a "
                    f"django_redis.cache.RedisCache backend or Q_CLUSTER['redis']",
                    key="django_redis") from None
            if client.connection_pool.connection_kwargs.get("decode_responses"):
                raise ConfigError(
                    f"Redis broker: the django-redis cache {self.django_redis!r} decodes "
                    f"responses; the broker needs bytes (unset decode_responses)",
                    key="django_redis")
            return client
        return new_client(self.redis_options, plugin=PLUGIN)

    def client(self) -> redis.Redis:
        """The ``redis.Redis`` client (built on first use; it connects when used)."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._build_client()
                client = self._client
        return client

    def _script(self) -> _Scripts:
        client = self.client()
        found = self._scripts
        if found is None or found.claim.registered_client is not client:
            found = self._scripts = _Scripts(client)
        return found

    def close(self) -> None:
        """Drop the connections; the next call opens new ones. A django-redis
        connection is shared with the cache: it is only let go of, not closed."""
        client, found, self._client, self._scripts = self._client, self._scripts, None, None
        if found is not None:
            found.direct.close()
        if client is not None and self.django_redis is None:
            with contextlib.suppress(Exception):
                client.close()
                client.connection_pool.disconnect()

    # -- where the server is, for messages (never with a password)

    @property
    def address(self) -> str:
        """host:port/db of the server (or its socket), for messages; never a password."""
        where = address(self.client())
        return where if self.django_redis is None else (
            f"{where} (django-redis cache {self.django_redis!r})")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn redis-py's errors into qhive's, naming the server and the fix."""
        try:
            yield
        except redis.BusyLoadingError as exc:
            raise BrokerConnectionError(
                f"Redis broker: {what} failed: Redis at {self.address} is still loading its "
                f"data after a restart ({exc}); try again in a moment") from exc
        except redis.AuthenticationError as exc:
            raise BrokerConnectionError(
                f"Redis broker: {what} failed: Redis at {self.address} refused the "
                f"credentials ({exc}); check the password/username of Q_CLUSTER['redis']"
            ) from exc
        except redis.TimeoutError as exc:
            raise BrokerConnectionError(
                f"Redis broker: {what} failed: Redis at {self.address} did not answer in "
                f"time ({exc}); is it overloaded or unreachable? (socket_timeout="
                f"{self._socket_timeout()})") from exc
        except redis.ConnectionError as exc:
            raise BrokerConnectionError(
                f"Redis broker: {what} failed: cannot reach Redis at {self.address} ({exc}). "
                f"{self._start_hint()}") from exc
        except redis.RedisError as exc:
            hint = ""
            if "unknown command" in str(exc).lower():
                hint = " (the Redis broker needs Redis 6.2 or later)"
            raise BrokerError(f"Redis broker: {what} failed on Redis at {self.address}: "
                              f"{type(exc).__name__}: {exc}{hint}") from exc

    def _start_hint(self) -> str:
        kwargs = self._connection_kwargs()
        if kwargs.get("path"):
            return ("Is redis-server running? Start it with: "
                    f"redis-server --daemonize yes --unixsocket {kwargs['path']}")
        host, port = kwargs.get("host", "127.0.0.1"), kwargs.get("port", 6379)
        if host in ("127.0.0.1", "localhost", "::1"):
            return (f"Is redis-server running? Start it with: "
                    f"redis-server --daemonize yes --port {port}")
        return f"Is the Redis server at {host}:{port} running and reachable from this host?"

    def _connection_kwargs(self) -> Mapping[str, Any]:
        client = self._client
        return client.connection_pool.connection_kwargs if client is not None else {}

    def _socket_timeout(self) -> float | None:
        return self._connection_kwargs().get("socket_timeout")

    def _block_limit(self) -> float:
        """How long one blocking wait may last: below the socket timeout, so that
        a wait is never mistaken for a dead server (and a dead one is noticed)."""
        timeout = self._socket_timeout()
        return MAX_BLOCK if not timeout else max(MIN_BLOCK, min(MAX_BLOCK, timeout / 2))

    # -- enqueue

    def enqueue(self, payload: bytes, *, delay: float = 0.0, priority: int = 0) -> str:
        """Enqueue ``payload``; with ``delay`` (seconds) it cannot be taken before
        then, with ``priority`` (-10 to 10) it goes before lower priorities."""
        payload = _payload(payload)
        if not (delay == 0 and priority == 0):
            delay, priority = checked_delivery(PLUGIN, delay, priority)
            return self._enqueue_with(payload, _delay_ms(delay), priority)
        with self._errors("enqueue"):
            found = self._script()
            ids = found.direct.evalsha(found.enqueue, self._enqueue_keys(), [_suffix(), payload])
        return ids[0].decode()

    def _enqueue_with(self, payload: bytes, delay_ms: int, priority: int) -> str:
        k = self.keys
        with self._errors("enqueue"):
            found = self._script()
            new_id = found.direct.evalsha(
                found.enqueue_with, [k.seq, k.waiting, k.payloads, k.prioritized, k.delayed],
                [_suffix(), payload, delay_ms, priority, WAKE_BELOW_MS])
        return new_id.decode()

    def enqueue_many(self, payloads: Iterable[bytes]) -> list[str]:
        batch = [_payload(p) for p in payloads]
        if not batch:
            return []
        script, keys = self._script().enqueue, self._enqueue_keys()
        with self._errors("enqueue_many"):
            pipe = self.client().pipeline(transaction=False)
            for chunk in _chunks(batch):
                script(keys=keys, args=[_suffix(), *chunk], client=pipe)
            replies = pipe.execute()
        return [i.decode() for ids in replies for i in ids]

    def _enqueue_keys(self) -> list[str]:
        return [self.keys.seq, self.keys.waiting, self.keys.payloads]

    # -- dequeue

    def dequeue(self, count: int = 1, timeout: float = 0.0) -> list[Message]:
        count = max(1, int(count))
        deadline = time.monotonic() + max(float(timeout or 0.0), 0.0)
        with self._errors("dequeue"):
            found = self._script()
            claim = self._claim_args(count)
            reply = found.direct.evalsha(found.claim, *claim)
            # A claim that took nothing answers the ms until something falls due (0: nothing).
            while type(reply) is int and (remaining := deadline - time.monotonic()) > 0:
                # BLMOVE returns as soon as the list is not empty (or after the wait);
                # the claim sent behind it runs then, without a round trip in between.
                limit = min(remaining, self._block_limit())
                if reply:
                    limit = min(limit, reply / 1000)
                wait = max(MIN_BLOCK, round(limit, 3))
                k = self.keys
                _, reply = found.direct.pipeline(
                    ("BLMOVE", k.waiting, k.waiting, "LEFT", "LEFT", wait),
                    evalsha_command(found.claim, *claim))
                if isinstance(reply, redis.exceptions.NoScriptError):
                    reply = found.direct.evalsha(found.claim, *claim)  # loads it
                elif isinstance(reply, Exception):
                    raise reply
        if type(reply) is int:
            return []
        return [Message(reply[i].decode(), reply[i + 1], int(reply[i + 2]))
                for i in range(0, len(reply), 3)]

    def _claim_args(self, count: int) -> tuple[list[str], list[int]]:
        """KEYS and ARGV of the claim script."""
        k = self.keys
        retry_ms = max(0, round(self.config.retry * 1000))
        return ([k.waiting, k.inflight, k.payloads, k.deliveries, k.prioritized, k.delayed],
                [count, retry_ms])

    # -- finishing messages

    def acknowledge(self, ack_id: str) -> None:
        self.acknowledge_many([ack_id])

    def acknowledge_many(self, ack_ids: Iterable[str]) -> None:
        ids = list(ack_ids)
        if ids:
            with self._errors("acknowledge"):
                self._forget(ids)

    def fail(self, ack_id: str) -> None:
        with self._errors("fail"):
            self._forget([ack_id])

    def delete(self, ack_id: str) -> None:
        with self._errors("delete"):
            self._forget([ack_id], waiting_too=True)

    def _forget(self, ids: list[str], *, waiting_too: bool = False) -> None:
        """Remove messages in one round trip (MULTI/EXEC). A message that is
        waiting again (its receipt ran out, or it was released) keeps its id in
        ``waiting``, ``prioritized`` or ``delayed`` unless ``waiting_too``; the claim
        that takes it finds no payload and drops it. An acknowledgement thus costs
        what it did before priorities and delays (and the priority, in the id, needs
        no cleaning)."""
        k = self.keys
        commands = [("MULTI",), ("ZREM", k.inflight, *ids), ("HDEL", k.payloads, *ids),
                    ("HDEL", k.deliveries, *ids)]
        if waiting_too:
            commands += [("LREM", k.waiting, 0, ack_id) for ack_id in ids]
            commands += [("ZREM", k.prioritized, *ids), ("ZREM", k.delayed, *ids)]
        *queued, done = self._script().direct.pipeline(*commands, ("EXEC",))
        # an error queueing a command (EXEC then fails: EXECABORT), or running one
        for reply in [*queued, done, *(done if isinstance(done, list) else [])]:
            if isinstance(reply, Exception):
                raise reply

    def touch(self, ack_ids: Iterable[str]) -> None:
        ids = list(ack_ids)
        retry_ms = max(0, round(self.config.retry * 1000))
        with self._errors("touch"):
            for start in range(0, len(ids), CHUNK_MESSAGES):
                self._script().touch(keys=[self.keys.inflight],
                                     args=[retry_ms, *ids[start:start + CHUNK_MESSAGES]])

    def release(self, ack_id: str, *, delay: float = 0.0) -> None:
        """Give a message in flight back, its delivery still counted: at once, in its
        place among the waiting ones of its priority; or after ``delay`` seconds."""
        delay_ms = 0 if delay == 0 else _delay_ms(checked_delivery(PLUGIN, delay)[0])
        k = self.keys
        with self._errors("release"):
            self._script().release(
                keys=[k.waiting, k.inflight, k.payloads, k.prioritized, k.delayed],
                args=[ack_id, delay_ms, WAKE_BELOW_MS])

    # -- sizes and queues

    def queue_size(self) -> int:
        """Messages that can be taken now: not the delayed ones, nor a wake token."""
        with self._errors("queue_size"):
            return int(self._script().queue_size(keys=[self.keys.waiting,
                                                        self.keys.prioritized]))

    def lock_size(self) -> int:
        with self._errors("lock_size"):
            return int(self.client().zcard(self.keys.inflight))

    def purge_queue(self) -> None:
        """Remove every message, waiting or in flight (ids keep counting up)."""
        with self._errors("purge_queue"):
            self.client().unlink(*self.keys.messages)

    def delete_queue(self) -> None:
        with self._errors("delete_queue"):
            self.client().unlink(*self.keys.messages, self.keys.seq)

    # -- the server

    def ping(self) -> bool:
        with self._errors("ping"):
            return bool(self.client().ping())

    def info(self) -> str:
        if self._info is None:
            with self._errors("info"):
                version = self.client().info("server").get("redis_version", "?")
            self._info = f"Redis {version}"
        return self._info

    # -- statistics

    def set_stat(self, key: str, value: bytes, ttl: float) -> None:
        ttl_ms = max(1, math.ceil(float(ttl) * 1000))
        with self._errors("set_stat"):
            self._script().set_stat(keys=[STATS_INDEX, STATS_VALUE + key],
                                    args=[_payload(value), ttl_ms, key])

    def get_stat(self, key: str) -> bytes | None:
        with self._errors("get_stat"):
            return self.client().get(STATS_VALUE + key)

    def get_stats(self, prefix: str) -> list[bytes]:
        """Every live stat under ``prefix``: the index names them (no ``KEYS``, no
        ``SCAN`` over the database), one ``MGET`` reads them."""
        wanted = prefix.encode()
        with self._errors("get_stats"):
            live = self._script().live_stats(keys=[STATS_INDEX])
            names = [STATS_VALUE.encode() + k for k in live if k.startswith(wanted)]
            values = self.client().mget(names) if names else []
        return [v for v in values if v is not None]


# --------------------------------------------------------------------------- helpers


def _payload(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"the Redis broker queues bytes, got {type(value).__name__}")


def _delay_ms(delay: float) -> int:
    """``delay`` seconds as whole ms, rounded up: never taken before it."""
    return math.ceil(delay * 1000)


def _suffix() -> str:
    return os.urandom(4).hex()


def _chunks(batch: list[bytes]) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    size = 0
    for payload in batch:
        if chunk and (len(chunk) >= CHUNK_MESSAGES or size + len(payload) > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(payload)
        size += len(payload)
    yield chunk


def _check_django_redis(alias: Any) -> str | None:
    if alias is None:
        return None
    if not isinstance(alias, str) or not alias:
        raise ConfigError(f"Redis broker: Q_CLUSTER['django_redis'] must be the alias of a "
                          f"cache in settings.CACHES, got {alias!r}", key="django_redis")
    if importlib.util.find_spec("django_redis") is None:
        raise ConfigError("Redis broker: Q_CLUSTER['django_redis'] needs django-redis: "
                          "pip install 'qhive-broker-redis[django]'", key="django_redis")
    # Django is no dependency of the Redis broker: only the django_redis key needs it
    from django.conf import settings

    caches = getattr(settings, "CACHES", {}) if settings.configured else {}
    if alias not in caches:
        raise ConfigError(f"Redis broker: Q_CLUSTER['django_redis'] names the cache {alias!r}, "
                          f"which is not in settings.CACHES ({', '.join(caches) or 'none'})",
                          key="django_redis")
    backend = str(caches[alias].get("BACKEND", ""))
    if not backend.startswith("django_redis."):
        raise ConfigError(f"Redis broker: the cache {alias!r} of Q_CLUSTER['django_redis'] is a "
                          f"{backend or 'cache without BACKEND'}, not a django-redis cache; "
                          f"use Q_CLUSTER['redis'] with its URL instead", key="django_redis")
    return alias
