"""``CacheResultStore``: task results in Django's cache framework.

This is where Django Q's ``cached=True`` / ``cached=<seconds>`` results go. The
cache keeps them for ``timeout`` seconds (or until it evicts them), so the store
does not apply ``save_limit``: results expire instead.

What Django Q2 got wrong, and what is done here instead:

* Its keys hang off the *broker's* list key, so the result of a task routed to
  an ``ALT_CLUSTERS`` cluster is not found by ``result(..., cached=True)`` of
  another process. Here every key starts with the project ``name``
  (``qhive:<name>:``), shared by all clusters of a project.
* It keeps a group as one list value, read, appended to and written back: two
  clusters saving members at once lose one. Here no list is ever rewritten.
  Each member adds its own marker with ``cache.add`` (only the first save of an
  id succeeds), takes a number from a ``cache.incr`` counter and claims the slot
  key of that number with ``cache.add`` — a slot taken by a racer (a backend
  whose ``incr`` is a get-then-set) only costs another number, never a member.
* A success is final: it is written with ``cache.add``, so of two racing
  successes the first stays; failures are replaced with ``cache.set``.

The guarantees hold as far as the backend's ``add`` is atomic across processes:
Redis, Memcached and the database cache (its primary key) are; LocMem is within
its one process; the file-based cache is not (see the README).

Keys (under Django's own ``KEY_PREFIX`` and ``VERSION``), with ``<p>`` =
``qhive:<name>``; a part that is not a short plain word (a group with spaces, a
long name) is replaced by ``~`` and a hash of it, so every key is safe for
Memcached:

* ``<p>:success:<id>`` — the signed package of a success (final);
* ``<p>:failure:<id>`` — the signed package of the latest failure;
* ``<p>:group:<g>:member:<id>`` — the slot number of a member of group ``g``;
* ``<p>:group:<g>:n`` — the counter that numbers the slots;
* ``<p>:group:<g>:<n>`` — slot ``n``: the id of a member;
* ``<p>:name:<name>`` — ``"<stopped µs>:<id>"`` of the newest result of that name;
* ``<p>:stat:<key>`` — a cluster statistic (for brokers that keep none), with its
  expiry, and ``<p>:stats`` — the list of their keys (see :meth:`CacheResultStore.set_stat`).

Every result key gets the store's ``timeout``; the index keys of a group or name are
refreshed (``touch``) by each save into it, so they live as long as their
newest result.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import InvalidCacheBackendError, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from qhive.codec import TaskCodec
from qhive.contracts import ResultStore, TaskResult
from qhive.errors import ConfigError, QhiveError
from qhive.result_packages import codec_for, pack, unpack

if TYPE_CHECKING:
    from django.core.cache.backends.base import BaseCache
    from qhive.config import Config

__all__ = ["CacheResultStore", "CacheStoreError"]

logger = logging.getLogger("qhive.store.cache")

#: Every key of the store starts with this, then the project name.
KEY_PREFIX = "qhive"
#: Keys asked for (or deleted) in one call to the cache.
CHUNK = 500
#: How many numbers a member may draw before giving up on a slot.
MAX_SLOT_CLAIMS = 100
#: Slots read past the counter, in case a racer's number is not counted yet.
PROBE = 16

_NOT_GIVEN: Any = object()
_PLAIN = re.compile(r"[A-Za-z0-9_.\-]{1,64}", re.ASCII)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class CacheStoreError(QhiveError):
    """The cache did not do what the store needs (e.g. no slot could be claimed)."""


class CacheResultStore(ResultStore):
    """Results in a Django cache, kept ``timeout`` seconds.

    :param config: the cluster's config; it must carry the secret key (the
        pipeline's does), else the first use raises :class:`qhive.errors.ConfigError`.
    :param cache: the alias in ``settings.CACHES``; default ``config.cache``
        (``Q_CLUSTER["cache"]``, ``"default"``).
    :param timeout: seconds a result is kept, ``None`` for ever (the cache may
        still evict it). Not given: from ``config.cached`` (an int: that many
        seconds; ``True``/``False``: for ever).

    Building one touches no cache: the pipeline makes one per distinct timeout.
    """

    #: Results expire instead: every result given is kept (until its timeout).
    applies_save_limit = False

    def __init__(self, *, config: Config | None = None, cache: str | None = None,
                 timeout: int | None = _NOT_GIVEN) -> None:
        super().__init__(config=config)
        if cache is not None and (not isinstance(cache, str) or not cache):
            raise ConfigError(f"qhive-store-cache: 'cache' must be the alias of a cache in "
                              f"settings.CACHES, got {cache!r}", key="cache")
        self.cache_alias = cache or self.config.cache
        if timeout is _NOT_GIVEN:
            cached = self.config.cached
            timeout = None if isinstance(cached, bool) else cached
        self.timeout = _check_timeout(timeout)
        self.prefix = f"{KEY_PREFIX}:{_part(self.config.name)}:"
        self._codec: TaskCodec | None = None

    # -- plumbing

    @property
    def codec(self) -> TaskCodec:
        """Signs and verifies the stored packages (built on first use)."""
        if self._codec is None:
            self._codec = codec_for(self.config, "qhive-store-cache")
        return self._codec

    def _cache(self) -> BaseCache:
        """The Django cache of this thread; checks the codec first, so that a store
        without a secret key fails on its first use whatever that is."""
        self.codec  # noqa: B018 (raises ConfigError without a secret key)

        try:
            return caches[self.cache_alias]
        except InvalidCacheBackendError as exc:
            known = ", ".join(getattr(settings, "CACHES", {})) or "none"
            raise ConfigError(
                f"qhive-store-cache: there is no cache {self.cache_alias!r} in "
                f"settings.CACHES (it has: {known}); set Q_CLUSTER['cache'] to one of them",
                key="cache") from exc

    def ping(self) -> bool:
        """Read one key: a cache whose server is down raises (Redis, the database); one
        whose backend hides its errors (Memcached) cannot be asked more than this."""
        self._cache().get(f"{self.prefix}ping")
        return True

    def close(self) -> None:
        if not settings.configured:  # never used: nothing to close
            return

        if self.cache_alias in caches.settings:
            caches[self.cache_alias].close()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "cache_alias": self.cache_alias,
                "timeout": self.timeout, "prefix": self.prefix}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._codec = None

    def __repr__(self) -> str:
        keep = "for ever" if self.timeout is None else f"{self.timeout}s"
        return f"<{type(self).__name__} cache={self.cache_alias!r} timeout={keep}>"

    # -- keys

    def _success_key(self, task_id: str) -> str:
        return f"{self.prefix}success:{_part(task_id)}"

    def _failure_key(self, task_id: str) -> str:
        return f"{self.prefix}failure:{_part(task_id)}"

    def _group_key(self, group: str, suffix: str | int) -> str:
        return f"{self.prefix}group:{_part(group)}:{suffix}"

    def _member_key(self, group: str, task_id: str) -> str:
        return self._group_key(group, f"member:{_part(task_id)}")

    def _name_key(self, name: str) -> str:
        return f"{self.prefix}name:{_part(name)}"

    # -- reading

    def get(self, task_id: str) -> TaskResult | None:
        return self._read(self._cache(), [task_id]).get(task_id)

    def get_by_name(self, name: str) -> TaskResult | None:
        cache = self._cache()
        newest = cache.get(self._name_key(name))
        if not isinstance(newest, str) or ":" not in newest:
            return None
        found = self._read(cache, [newest.partition(":")[2]])
        return next(iter(found.values()), None)

    def get_group(self, group: str, *, failures: bool = False) -> list[TaskResult]:
        results = self._group_results(self._cache(), group)
        if not failures:
            results = [r for r in results if r.success]
        return results

    def count_group(self, group: str, *, failures: bool = False) -> int:
        results = self._group_results(self._cache(), group)
        return sum(1 for r in results if not (failures and r.success))

    def _read(self, cache: BaseCache, ids: Sequence[str]) -> dict[str, TaskResult]:
        """id -> stored result of those ``ids`` that have one (a success wins over
        a failure left behind by a racing save)."""
        found: dict[str, TaskResult] = {}
        for chunk in _chunks(list(dict.fromkeys(ids)), CHUNK // 2):
            keys = {}
            for task_id in chunk:
                keys[self._success_key(task_id)] = task_id
                keys[self._failure_key(task_id)] = task_id
            values = cache.get_many(list(keys))
            for task_id in chunk:
                for key in (self._success_key(task_id), self._failure_key(task_id)):
                    if key in values:
                        result = self._unpack(values[key], task_id)
                        if result is not None:
                            found[task_id] = result
                            break
        return found

    def _unpack(self, data: Any, task_id: str) -> TaskResult | None:
        """The result in a cache value, or None (and a warning) when it fails
        verification or decoding: it is treated as absent, as if evicted."""
        try:
            return unpack(self.codec, data, task_id)
        except Exception as exc:
            logger.warning("qhive-store-cache: the cached result of task %s is unreadable "
                           "and treated as absent (%s: %s)", task_id, type(exc).__name__, exc)
            return None

    def _member_ids(self, cache: BaseCache, group: str) -> tuple[list[str], int]:
        """The ids in the slots of ``group`` (in slot order) and the highest slot
        number read. Slots past the counter are probed until ``PROBE`` empty ones
        in a row: a racer may have claimed a slot its counter update does not show."""
        counted = cache.get(self._group_key(group, "n"))
        counted = counted if isinstance(counted, int) else 0
        ids: list[str] = []
        last = 0
        while True:
            size = min(CHUNK, counted - last) if last < counted else PROBE
            keys = [self._group_key(group, n) for n in range(last + 1, last + size + 1)]
            values = cache.get_many(keys)
            ids.extend(v for k in keys if isinstance(v := values.get(k), str))
            last += size
            if last > counted and not values:
                return list(dict.fromkeys(ids)), last

    def _group_results(self, cache: BaseCache, group: str) -> list[TaskResult]:
        ids, _ = self._member_ids(cache, group)
        results = [r for r in self._read(cache, ids).values() if r.group == group]
        return sorted(results, key=lambda r: (_micros(r.stopped), r.id), reverse=True)

    # -- deleting

    def delete(self, task_id: str) -> bool:
        cache = self._cache()
        # Group slots and the name index may still point here: readers skip ids
        # that have no result, and the keys expire with their group.
        removed = cache.delete(self._success_key(task_id))
        return bool(cache.delete(self._failure_key(task_id))) or bool(removed)

    def delete_group(self, group: str) -> int:
        cache = self._cache()
        ids, last_slot = self._member_ids(cache, group)
        present = [r for r in self._read(cache, ids).values() if r.group == group]
        keys = [self._group_key(group, "n")]
        keys += [self._group_key(group, n) for n in range(1, last_slot + 1)]
        for r in present:
            keys += [self._success_key(r.id), self._failure_key(r.id)]
        keys += [self._member_key(group, task_id) for task_id in ids]
        for chunk in _chunks(keys, CHUNK):
            cache.delete_many(chunk)
        return len(present)

    # -- statistics (for clusters whose broker keeps none)

    #: How long the index of statistics lives after its last save.
    STATS_INDEX_TIMEOUT = 3600

    @property
    def keeps_stats(self) -> bool:  # type: ignore[override]
        """Only a cache that processes share can: not LocMem (each process has its
        own) nor the dummy cache (keeps nothing)."""
        try:
            cache = caches[self.cache_alias]
        except Exception:  # no such cache: the first save says so, naming the setting
            return False
        return not isinstance(cache, (LocMemCache, DummyCache))

    def _stat_key(self, key: str) -> str:
        return f"{self.prefix}stat:{_part(key)}"

    def set_stat(self, key: str, value: bytes, ttl: float) -> None:
        """Set the value and make sure the index lists its key. The index is only
        rewritten when the key is missing from it, so two clusters starting at the
        same moment may drop each other's entry: each adds itself again at its next
        save (every guard cycle)."""
        cache, index_key = self._cache(), f"{self.prefix}stats"
        cache.set(self._stat_key(key), bytes(value), math.ceil(ttl))  # caches count seconds
        index = cache.get(index_key)
        index = index if isinstance(index, list) else []
        if key in index:
            cache.touch(index_key, self.STATS_INDEX_TIMEOUT)
            return
        live = cache.get_many([self._stat_key(k) for k in index])
        index = [k for k in index if self._stat_key(k) in live]  # stopped clusters go
        cache.set(index_key, [*index, key], self.STATS_INDEX_TIMEOUT)

    def get_stat(self, key: str) -> bytes | None:
        value = self._cache().get(self._stat_key(key))
        return value if isinstance(value, bytes) else None

    def get_stats(self, prefix: str) -> list[bytes]:
        cache = self._cache()
        index = cache.get(f"{self.prefix}stats")
        keys = [self._stat_key(k) for k in index or () if isinstance(k, str)
                and k.startswith(prefix)]
        values = cache.get_many(keys) if keys else {}
        return [v for k in keys if isinstance(v := values.get(k), bytes)]

    # -- saving

    def save_many(self, results: Iterable[TaskResult]) -> list[TaskResult]:
        cache = self._cache()
        return [self._save(cache, r) for r in results]

    def save(self, result: TaskResult) -> TaskResult:
        return self._save(self._cache(), result)

    def _save(self, cache: BaseCache, result: TaskResult) -> TaskResult:
        stored = self._read(cache, [result.id]).get(result.id)
        if stored is not None and stored.success:  # a success is final
            return stored
        if stored is not None:  # a failure is replaced; one more attempt
            result = dataclasses.replace(result, attempt_count=stored.attempt_count + 1)
        result, package = pack(self.codec, result)
        # Indexed first: a reader that sees the result by id finds it by name and in its
        # group too (readers skip indexed ids that have no result yet).
        if result.group is not None:
            self._index_member(cache, result.group, result.id)
        self._index_name(cache, result)
        if result.success:
            success_key = self._success_key(result.id)
            if not cache.add(success_key, package, self.timeout):
                winner = self._read(cache, [result.id]).get(result.id)
                if winner is not None and winner.success:  # another process saved one first
                    return winner
                cache.set(success_key, package, self.timeout)  # it held an unreadable value
            cache.delete(self._failure_key(result.id))
        else:
            cache.set(self._failure_key(result.id), package, self.timeout)
        return result

    def _index_member(self, cache: BaseCache, group: str, task_id: str) -> None:
        """Make ``task_id`` a member of ``group`` once (its first save), or keep
        its index keys alive (a later save)."""
        member, counter = self._member_key(group, task_id), self._group_key(group, "n")
        if cache.add(member, 0, self.timeout):
            slot = self._claim_slot(cache, group, task_id)
            cache.set(member, slot, self.timeout)
        else:
            slot = cache.get(member)
            if isinstance(slot, int) and slot > 0:
                cache.touch(self._group_key(group, slot), self.timeout)
            cache.touch(member, self.timeout)
        # incr() of some backends (database, file) rewrites the counter with the
        # cache's default timeout: give it the group's.
        cache.touch(counter, self.timeout)

    def _claim_slot(self, cache: BaseCache, group: str, task_id: str) -> int:
        counter = self._group_key(group, "n")
        for _ in range(MAX_SLOT_CLAIMS):
            cache.add(counter, 0, self.timeout)
            try:
                number = cache.incr(counter)
            except ValueError:  # the counter expired between add and incr
                continue
            if cache.add(self._group_key(group, number), task_id, self.timeout):
                return number
        raise CacheStoreError(
            f"qhive-store-cache: could not claim a slot for task {task_id} in group "
            f"{group!r} of cache {self.cache_alias!r} after {MAX_SLOT_CLAIMS} tries; its "
            f"add() does not seem atomic — use a Redis, Memcached or database cache")

    def _index_name(self, cache: BaseCache, result: TaskResult) -> None:
        """Point the name at ``result`` if it is the newest of that name.

        A read-then-write: two processes saving results of one name at the same
        moment may leave the older one indexed (names are unique in practice)."""
        key = self._name_key(result.name)
        mine = (_micros(result.stopped), result.id)
        current = cache.get(key)
        if isinstance(current, str) and ":" in current:
            micros, _, task_id = current.partition(":")
            if micros.lstrip("-").isdigit() and (int(micros), task_id) > mine:
                return
        cache.set(key, f"{mine[0]}:{mine[1]}", self.timeout)


def _check_timeout(timeout: Any) -> int | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigError(f"qhive-store-cache: timeout must be a number of seconds > 0 or "
                          f"None (kept until the cache evicts it), got {timeout!r}",
                          key="cached")
    # Caches count whole seconds (Redis would read 0.5 as 0: gone at once): round up.
    return math.ceil(timeout)


def _part(text: str) -> str:
    """``text`` if it is a short plain word, else ``~`` and a hash of it: keys stay
    valid for Memcached (no spaces, at most 250 bytes) and cannot be confused."""
    text = str(text)
    if _PLAIN.fullmatch(text):
        return text
    return "~" + hashlib.blake2b(text.encode(errors="surrogatepass"), digest_size=16).hexdigest()


def _micros(moment: dt.datetime) -> int:
    """Microseconds since the epoch (a naive time is taken as UTC, as the core makes them)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
