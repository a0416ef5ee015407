"""``RedisResultStore``: task results directly in Redis, with expiry.

For projects that have Redis and want results there, without Django's cache
framework (and without Django at all): results expire after ``timeout``
seconds if set, and ``save_limit`` / ``save_limit_per`` are enforced as by the
ORM store.

Every rule is applied inside Redis by one Lua script (:mod:`qhive_store_redis.scripts`),
so they hold across processes without locks or retries: a success is final; a
failure is replaced by a later save and its ``attempt_count`` becomes the stored
count plus one; the successes beyond ``save_limit`` are pruned in the same
script that saved the batch; pinned results and failures are never counted or
pruned. ``save_many`` sends the whole batch in one script call.

Keys, all under the project ``name`` (not the cluster's, so every cluster of a
project finds every result) in one hash tag, ``<p>`` = ``qhive:{<name>}``:

* ``<p>:result:<id>`` — HASH: the signed result and what the scripts read;
* ``<p>:group:<group>`` — ZSET id → ``stopped`` (µs since the epoch);
* ``<p>:name:<name>`` — ZSET id → ``stopped``, newest = the result of that name;
* ``<p>:successes`` — ZSET of the unpinned successes by ``stopped`` (``save_limit``),
  or ``<p>:successes:<per>:=<value>`` (``-`` for None) per ``save_limit_per`` value;
* ``<p>:stat:<key>`` — a cluster statistic (for brokers that keep none), with its
  expiry, and ``<p>:stats`` — ZSET key → expiry (ms), their index.

``<p>:saved`` is no key but the pub/sub channel on which the save script announces
what it wrote while someone waits (:meth:`RedisResultStore.wait`, used by
``result(wait=…)``): a waiter sleeps on its own connection until its result is
announced, instead of polling.

The index keys get the result's expiry too, refreshed by every save into them;
an index entry whose result expired is dropped by the next read of that index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from qhive.codec import TaskCodec
from qhive.contracts import ProcessLocal, ResultStore, TaskResult
from qhive.errors import ConfigError, QhiveError
from qhive.result_packages import codec_for, pack, unpack
from qhive_redis_client.client import address, check_options, new_client
from qhive_redis_client.direct import DirectCommands

from qhive_store_redis import scripts
from qhive_store_redis.waiting import Subscriber

if TYPE_CHECKING:
    from qhive.config import Config

__all__ = ["RedisResultStore", "RedisStoreConnectionError", "RedisStoreError"]

logger = logging.getLogger("qhive.store.redis")

#: Every key of the store starts with this, then ``{<project name>}``.
KEY_PREFIX = "qhive"
#: Where results go when neither the ``redis`` option nor ``Q_CLUSTER["redis"]`` is set.
DEFAULT_REDIS = {"host": "127.0.0.1", "port": 6379, "db": 0}
#: How the store names itself in errors.
PLUGIN = "qhive-store-redis"
#: Results sent in one script call (one round trip each).
CHUNK = 1000
#: Pub/sub connections kept for the next waiter once a wait is over (per process).
IDLE_SUBSCRIBERS = 4
#: A waiter with no deadline still wakes this often, only to sleep again (no command).
LONGEST_SLEEP = 60.0

T = TypeVar("T")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class RedisStoreError(QhiveError):
    """Redis refused or failed a command of the store."""


class RedisStoreConnectionError(RedisStoreError, ConnectionError):
    """The store's Redis cannot be reached (or refused the credentials)."""


class _Scripts:
    """The Lua scripts, registered on one client (no round trip until first called),
    and the client's :class:`DirectCommands` for the commands of every task."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.direct = DirectCommands(client)
        self.save = client.register_script(scripts.SAVE)
        self.group = client.register_script(scripts.GROUP)
        self.count = client.register_script(scripts.COUNT)
        self.newest = client.register_script(scripts.NEWEST)
        self.delete = client.register_script(scripts.DELETE)
        self.delete_group = client.register_script(scripts.DELETE_GROUP)
        self.set_stat = client.register_script(scripts.SET_STAT)
        self.live_stats = client.register_script(scripts.LIVE_STATS)


class RedisResultStore(ProcessLocal, ResultStore):
    """Results in Redis.

    :param config: the cluster's config; it must carry the secret key (the
        pipeline's does), else the first use raises :class:`qhive.errors.ConfigError`.
    :param redis: ``redis.Redis`` keyword arguments, or a URL for
        ``redis.Redis.from_url`` (``redis://``, ``rediss://``, ``unix://``).
        Not given: ``config.redis`` (Django Q's ``Q_CLUSTER["redis"]``, same
        forms) if set, else 127.0.0.1:6379, db 0.
    :param timeout: seconds a result is kept (whole seconds, rounded up);
        ``None``: until deleted or pruned.

    No connection is opened before the first command; a pickled copy leaves
    the connections behind and opens its own.
    """

    applies_save_limit = True

    def __init__(self, *, config: Config | None = None,
                 redis: Mapping[str, Any] | str | None = None,
                 timeout: float | None = None) -> None:
        super().__init__(config=config)
        if redis is not None:
            self.redis_options, self.options_from = redis, "result_store_options['redis']"
        elif self.config.redis is not None:
            self.redis_options, self.options_from = self.config.redis, "Q_CLUSTER['redis']"
        else:
            self.redis_options, self.options_from = DEFAULT_REDIS, "the default"
        self.redis_options = check_options(self.redis_options, plugin=PLUGIN,
                                           source=self.options_from)
        self.timeout = _check_timeout(timeout)
        self.prefix = f"{KEY_PREFIX}:{{{self.config.name}}}:"
        self._init_local_state()
        self.address = address(self._new_client())  # checks the options; connects not

    #: Left behind by a pickled copy, which makes its own (ProcessLocal).
    local_state = ("_client", "_scripts", "_codec", "_lock", "_subscribers")

    def _init_local_state(self) -> None:
        self._client: redis.Redis | None = None
        self._scripts: _Scripts | None = None
        self._codec: TaskCodec | None = None
        self._lock = threading.Lock()
        #: Unsubscribed pub/sub connections for the next waiters (see :meth:`wait`).
        self._subscribers: list[Subscriber] = []

    # -- plumbing

    def __repr__(self) -> str:
        keep = "for ever" if self.timeout is None else f"{self.timeout}s"
        return f"<{type(self).__name__} at {self.address} timeout={keep}>"

    @property
    def codec(self) -> TaskCodec:
        """Signs and verifies the stored results (built on first use)."""
        if self._codec is None:
            self._codec = codec_for(self.config, PLUGIN)
        return self._codec

    def _new_client(self) -> redis.Redis:
        return new_client(self.redis_options, plugin=PLUGIN, source=self.options_from)

    def _script(self) -> _Scripts:
        """The scripts on this process's client (both built on first use). Checks
        the codec first, so that a store without a secret key fails on first use."""
        self.codec  # noqa: B018 (raises ConfigError without a secret key)
        found = self._scripts
        if found is None:
            with self._lock:
                if self._scripts is None:
                    self._client = self._new_client()
                    self._scripts = _Scripts(self._client)
                found = self._scripts
        return found

    def close(self) -> None:
        """Drop the connections; the next command opens new ones."""
        with self._lock:
            kept, self._subscribers = self._subscribers, []
        for subscriber in kept:
            subscriber.close()
        client, found, self._client, self._scripts = self._client, self._scripts, None, None
        if found is not None:
            found.direct.close()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
                client.connection_pool.disconnect()

    @contextlib.contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        """Turn redis-py's errors into the store's, naming the server and the fix."""
        try:
            yield
        except redis.AuthenticationError as exc:
            raise RedisStoreConnectionError(
                f"qhive-store-redis: {what} failed: Redis at {self.address} refused the "
                f"credentials ({exc}); check the username/password in {self.options_from}"
            ) from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisStoreConnectionError(
                f"qhive-store-redis: {what} failed: cannot reach Redis at {self.address} "
                f"({type(exc).__name__}: {exc}). Is redis-server running there? The address "
                f"comes from {self.options_from}.") from exc
        except redis.RedisError as exc:
            raise RedisStoreError(f"qhive-store-redis: {what} failed on Redis at "
                                  f"{self.address}: {type(exc).__name__}: {exc}") from exc

    def ping(self) -> bool:
        """Ask Redis once: a cluster does as it starts, ``qhealth`` on every probe."""
        with self._talking("ping"):
            self._script()
            return bool(self._client.ping())  # type: ignore[union-attr]

    # -- keys

    def _group_key(self, group: str) -> str:
        return f"{self.prefix}group:{group}"

    def _name_key(self, name: str) -> str:
        return f"{self.prefix}name:{name}"

    def _ranked_key(self, result: TaskResult) -> str:
        """The save_limit set an unpinned success counts in ('' if none)."""
        limit, per = self.config.save_limit, self.config.save_limit_per
        if not result.success or result.pinned or limit == 0:
            return ""
        if per is None:
            return f"{self.prefix}successes"
        value = getattr(result, per)
        return f"{self.prefix}successes:{per}:" + ("-" if value is None else f"={value}")

    # -- reading

    def get(self, task_id: str) -> TaskResult | None:
        scripts_ = self._script()
        with self._talking("get"):
            blob, attempts = scripts_.direct.execute(
                "HMGET", f"{self.prefix}result:{task_id}", "blob", "attempts")
        return self._unpack(task_id, blob, attempts)

    def get_by_name(self, name: str) -> TaskResult | None:
        scripts_ = self._script()
        with self._talking("get_by_name"):
            found = scripts_.newest(keys=[self.prefix, self._name_key(name)])
        if not found:
            return None
        task_id, blob, attempts = found
        return self._unpack(task_id.decode(), blob, attempts)

    def get_group(self, group: str, *, failures: bool = False) -> list[TaskResult]:
        scripts_ = self._script()
        with self._talking("get_group"):
            flat = scripts_.group(keys=[self.prefix, self._group_key(group)],
                                  args=[int(failures)])
        results = [self._unpack(flat[i].decode(), flat[i + 1], flat[i + 2])
                   for i in range(0, len(flat), 3)]
        found = [r for r in results if r is not None]
        return sorted(found, key=lambda r: (_micros(r.stopped), r.id), reverse=True)

    def count_group(self, group: str, *, failures: bool = False) -> int:
        scripts_ = self._script()
        with self._talking("count_group"):
            return int(scripts_.count(keys=[self.prefix, self._group_key(group)],
                                      args=[int(failures)]))

    def _unpack(self, task_id: str, blob: bytes | None, attempts: Any) -> TaskResult | None:
        """The stored result with the stored attempt count, or None (and a warning)
        when it fails verification or decoding: it is treated as absent."""
        if blob is None:
            return None
        try:
            result = unpack(self.codec, blob, task_id)
            return dataclasses.replace(result, attempt_count=int(attempts))
        except Exception as exc:
            logger.warning("qhive-store-redis: the stored result of task %s is unreadable and "
                           "treated as absent (%s: %s)", task_id, type(exc).__name__, exc)
            return None

    # -- waiting

    def wait(self, look: Callable[[], T | None], deadline: float | None, *,
             task_id: str | None = None, name: str | None = None,
             group: str | None = None) -> T | None:
        """Like :meth:`ResultStore.wait`, without polling: subscribe to the
        announcements of the save script, look, then look again only when a save of
        ``task_id``, ``name`` or ``group`` is announced (or when the pub/sub connection
        was lost: announcements may have been missed). Subscribing first costs a
        result already there one round trip and saves every other wait one.
        Sleeping sends Redis nothing. Errors are the store's, as for any command."""
        if _passed(deadline):
            return look()
        wanted = self._announced_keys(task_id, name, group)
        with self._talking("wait"):
            subscriber = self._subscribed()
        try:
            found = look()
            while found is None:
                seconds = LONGEST_SLEEP if deadline is None else deadline - time.monotonic()
                if seconds <= 0:
                    break
                with self._talking("wait"):
                    try:
                        news = subscriber.news(min(seconds, LONGEST_SLEEP), wanted)
                    except redis.ConnectionError as exc:  # redis-py's reconnection failed
                        logger.warning("qhive-store-redis: the pub/sub connection of a waiter "
                                       "to Redis at %s broke (%s: %s); subscribing again",
                                       self.address, type(exc).__name__, exc)
                        subscriber.close()
                        subscriber = self._subscribed()
                        news = True  # announcements may have been missed
                if news:
                    found = look()
        except BaseException:
            subscriber.close()
            raise
        self._keep(subscriber)
        return found

    def _announced_keys(self, task_id: str | None, name: str | None,
                        group: str | None) -> frozenset[str]:
        """What the save script announces (keys less the prefix) for these."""
        keys = [f"{self.prefix}result:{task_id}" if task_id is not None else None,
                self._name_key(name) if name is not None else None,
                self._group_key(group) if group is not None else None]
        return frozenset(k.removeprefix(self.prefix) for k in keys if k is not None)

    def _subscribed(self) -> Subscriber:
        """A subscribed connection: a kept one, or a new one."""
        scripts_ = self._script()
        while True:
            with self._lock:
                if not self._subscribers:
                    break
                subscriber = self._subscribers.pop()
            if subscriber.inherited:
                subscriber.close()  # only dropped: the parent's socket
                continue
            try:
                subscriber.subscribe()
                return subscriber
            except redis.RedisError:  # it broke while kept; a new one says why if Redis did
                subscriber.close()
        subscriber = Subscriber(scripts_.client, f"{self.prefix}saved")
        try:
            subscriber.subscribe()
        except BaseException:
            subscriber.close()
            raise
        return subscriber

    def _keep(self, subscriber: Subscriber) -> None:
        """Unsubscribe and keep the connection for the next waiter (up to
        ``IDLE_SUBSCRIBERS``); close it if it cannot unsubscribe."""
        try:
            subscriber.unsubscribe()
        except redis.RedisError:
            subscriber.close()
            return
        with self._lock:
            if len(self._subscribers) < IDLE_SUBSCRIBERS:
                self._subscribers.append(subscriber)
                return
        subscriber.close()

    # -- deleting

    def delete(self, task_id: str) -> bool:
        scripts_ = self._script()
        with self._talking("delete"):
            return bool(scripts_.delete(keys=[self.prefix], args=[task_id]))

    def delete_group(self, group: str) -> int:
        scripts_ = self._script()
        with self._talking("delete_group"):
            return int(scripts_.delete_group(keys=[self.prefix, self._group_key(group)]))

    # -- statistics (for clusters whose broker keeps none)

    #: Keys with an expiry, indexed in one ZSET: one script call per save.
    keeps_stats = True

    def set_stat(self, key: str, value: bytes, ttl: float) -> None:
        scripts_ = self._script()
        with self._talking("set_stat"):
            scripts_.set_stat(keys=[self.prefix],
                              args=[key, bytes(value), max(1, math.ceil(float(ttl) * 1000))])

    def get_stat(self, key: str) -> bytes | None:
        scripts_ = self._script()
        with self._talking("get_stat"):
            return scripts_.client.get(f"{self.prefix}stat:{key}")

    def get_stats(self, prefix: str) -> list[bytes]:
        scripts_ = self._script()
        with self._talking("get_stats"):
            return list(scripts_.live_stats(keys=[self.prefix], args=[prefix]))

    # -- saving

    def save(self, result: TaskResult) -> TaskResult:
        return self.save_many([result])[0]

    def save_many(self, results: Iterable[TaskResult]) -> list[TaskResult]:
        incoming = [pack(self.codec, r) for r in results]
        if not incoming:
            return []
        scripts_ = self._script()
        settings = [self.timeout or 0, self.config.save_limit]
        answers: list[Any] = []
        with self._talking("save"):
            for start in range(0, len(incoming), CHUNK):
                args = list(settings)
                for result, blob in incoming[start : start + CHUNK]:
                    args += [result.id, blob, int(result.success), result.attempt_count,
                             _micros(result.stopped),
                             "" if result.group is None else self._group_key(result.group),
                             self._name_key(result.name) if result.name else "",
                             self._ranked_key(result)]
                answers += scripts_.direct.evalsha(scripts_.save, [self.prefix], args)
        return [self._answer(result, answer)
                for (result, _), answer in zip(incoming, answers, strict=True)]

    def _answer(self, result: TaskResult, answer: list[Any]) -> TaskResult:
        """What is stored for ``result``'s id after the script's ``answer``."""
        status = answer[0]
        if status == b"saved":
            return dataclasses.replace(result, attempt_count=int(answer[1]))
        if status == b"final":  # a success was stored before
            return self._unpack(result.id, answer[2], answer[1]) or result
        return result  # dropped: save_limit -1 keeps no success


def _passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _check_timeout(timeout: Any) -> int | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigError(f"qhive-store-redis: timeout must be a number of seconds > 0 or "
                          f"None (kept until deleted), got {timeout!r}", key="timeout")
    return math.ceil(timeout)  # EXPIRE counts whole seconds


def _micros(moment: dt.datetime) -> int:
    """Microseconds since the epoch, the index score (a naive time is taken as UTC).
    Exact in a Redis score (a double) until the year 2255."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)
