"""In-process drivers: the ``memory`` broker and the ``memory`` result store.

Both keep their data in process-wide registries, so every instance in one
process that names the same queue (or the same cluster ``name``) sees the same
data, as clients of one server would. Nothing crosses a process boundary: a
pickled copy unpickled elsewhere opens the queue of that name *there*. They are
for the demo, tests and single-process use (``sync``), not for a cluster of
worker processes.
"""

from __future__ import annotations

import collections
import copy
import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from qhive.contracts import Broker, Capabilities, Message, ResultStore, TaskResult

if TYPE_CHECKING:
    from qhive.config import Config

__all__ = ["MemoryBroker", "MemoryResultStore"]


# --------------------------------------------------------------------------- broker


class _Entry:
    __slots__ = ("deadline", "deliveries", "id", "payload", "seq")

    def __init__(self, seq: int, payload: bytes) -> None:
        self.id = uuid.uuid4().hex
        self.seq = seq
        self.payload = payload
        self.deliveries = 0
        self.deadline = 0.0  # monotonic time at which an in-flight message comes back


class _Queue:
    """One named queue: waiting messages in order, and messages in flight."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.waiting: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self.in_flight: dict[str, _Entry] = {}
        self.expiries: list[tuple[float, int, str]] = []  # heap; stale items are skipped
        self.seq = itertools.count()
        self.deleted = False

    def add(self, payload: bytes) -> str:
        entry = _Entry(next(self.seq), payload)
        self.waiting[entry.id] = entry
        return entry.id

    def requeue_expired(self, now: float) -> None:
        """Move messages whose receipt ran out back to the waiting line, in order."""
        back = []
        while self.expiries and self.expiries[0][0] <= now:
            deadline, _, ack_id = heapq.heappop(self.expiries)
            entry = self.in_flight.get(ack_id)
            if entry is not None and entry.deadline == deadline:
                del self.in_flight[ack_id]
                back.append(entry)
        if back:
            merged = sorted([*self.waiting.values(), *back], key=lambda e: e.seq)
            self.waiting = collections.OrderedDict((e.id, e) for e in merged)

    def take(self, count: int, now: float, retry: float) -> list[Message]:
        taken = []
        while self.waiting and len(taken) < count:
            _, entry = self.waiting.popitem(last=False)
            entry.deliveries += 1
            entry.deadline = now + retry
            self.in_flight[entry.id] = entry
            heapq.heappush(self.expiries, (entry.deadline, entry.seq, entry.id))
            taken.append(Message(entry.id, entry.payload, entry.deliveries))
        return taken

    def release(self, ack_id: str, now: float) -> None:
        """Make an in-flight message due now, so it is waiting again at once."""
        entry = self.in_flight.get(ack_id)
        if entry is not None:
            entry.deadline = now
            heapq.heappush(self.expiries, (now, entry.seq, entry.id))
            self.requeue_expired(now)

    def touch(self, ack_id: str, deadline: float) -> None:
        """Move the receipt of an in-flight message to ``deadline`` (later only)."""
        entry = self.in_flight.get(ack_id)
        if entry is not None and deadline > entry.deadline:
            entry.deadline = deadline
            heapq.heappush(self.expiries, (deadline, entry.seq, entry.id))

    def next_expiry(self) -> float | None:
        return self.expiries[0][0] if self.expiries else None

    def remove(self, ack_id: str) -> None:
        if self.in_flight.pop(ack_id, None) is None:
            self.waiting.pop(ack_id, None)
        elif len(self.expiries) > 2 * len(self.in_flight) + 64:  # drop stale heap items
            self.expiries = [(e.deadline, e.seq, e.id) for e in self.in_flight.values()]
            heapq.heapify(self.expiries)

    def clear(self) -> None:
        self.waiting.clear()
        self.in_flight.clear()
        self.expiries.clear()


_queues: dict[str, _Queue] = {}
_queues_lock = threading.Lock()
_stats: dict[str, tuple[bytes, float]] = {}  # key -> (value, monotonic expiry)
_stats_lock = threading.Lock()


class MemoryBroker(Broker):
    """A thread-safe in-process broker with receipts, bulk dequeue and blocking waits.

    A dequeued message is hidden until acknowledged; if it is not acknowledged
    within ``config.retry`` seconds it is handed out again with ``deliveries``
    one higher. ``dequeue`` waits on a condition variable, so it returns as soon
    as a message is enqueued (or an unacknowledged one comes back).
    """

    capabilities = Capabilities(
        receipts=True, bulk=True, blocking=True, fifo=True, stats=True, shared=False,
        touch=True,
    )

    def __init__(self, queue: str = "default", *, config: Config | None = None) -> None:
        super().__init__(queue, config=config)

    def _queue(self) -> _Queue:
        q = _queues.get(self.queue)
        if q is None:
            with _queues_lock:
                q = _queues.setdefault(self.queue, _Queue())
        return q

    @staticmethod
    def _bytes(payload: Any) -> bytes:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"a broker payload must be bytes, not {type(payload).__name__}")
        return bytes(payload)

    # -- required

    def enqueue(self, payload: bytes) -> str:
        return self.enqueue_many([payload])[0]

    def enqueue_many(self, payloads: Iterable[bytes]) -> list[str]:
        data = [self._bytes(p) for p in payloads]
        if not data:
            return []
        q = self._queue()
        with q.cond:
            ids = [q.add(p) for p in data]
            q.cond.notify(len(ids))
        return ids

    def dequeue(self, count: int = 1, timeout: float = 0.0) -> list[Message]:
        count = max(int(count), 1)
        retry = float(self.config.retry)
        deadline = time.monotonic() + max(float(timeout or 0.0), 0.0)
        while True:
            q = self._queue()
            with q.cond:
                while not q.deleted:
                    now = time.monotonic()
                    q.requeue_expired(now)
                    if q.waiting:
                        taken = q.take(count, now, retry)
                        if q.waiting:
                            q.cond.notify()  # pass the wake-up on to another waiter
                        return taken
                    wait = deadline - now
                    if wait <= 0:
                        return []
                    expiry = q.next_expiry()
                    if expiry is not None:
                        wait = min(wait, max(expiry - now, 0.001))
                    q.cond.wait(wait)
            # the queue was deleted while we waited: look again in its successor

    def acknowledge(self, ack_id: str) -> None:
        q = self._queue()
        with q.cond:
            q.remove(ack_id)

    def touch(self, ack_ids: Iterable[str]) -> None:
        q = self._queue()
        with q.cond:
            now = time.monotonic()
            q.requeue_expired(now)
            for ack_id in ack_ids:
                q.touch(ack_id, now + float(self.config.retry))

    def release(self, ack_id: str) -> None:
        q = self._queue()
        with q.cond:
            q.release(ack_id, time.monotonic())
            q.cond.notify()

    def queue_size(self) -> int:
        q = self._queue()
        with q.cond:
            q.requeue_expired(time.monotonic())
            return len(q.waiting)

    def purge_queue(self) -> None:
        q = self._queue()
        with q.cond:
            q.clear()

    # -- optional

    def lock_size(self) -> int:
        q = self._queue()
        with q.cond:
            q.requeue_expired(time.monotonic())
            return len(q.in_flight)

    def delete_queue(self) -> None:
        with _queues_lock:
            q = _queues.pop(self.queue, None)
        if q is not None:
            with q.cond:
                q.clear()
                q.deleted = True
                q.cond.notify_all()

    def info(self) -> str:
        return "Memory"

    # -- statistics (process-wide, like a cache shared by every broker of the process)

    def set_stat(self, key: str, value: bytes, ttl: float) -> None:
        with _stats_lock:
            _stats[key] = (self._bytes(value), time.monotonic() + float(ttl))

    def get_stat(self, key: str) -> bytes | None:
        with _stats_lock:
            item = _stats.get(key)
            if item is None:
                return None
            if item[1] <= time.monotonic():
                del _stats[key]
                return None
            return item[0]

    def get_stats(self, prefix: str) -> list[bytes]:
        now = time.monotonic()
        with _stats_lock:
            for key in [k for k, (_, expiry) in _stats.items() if expiry <= now]:
                del _stats[key]
            return [value for key, (value, _) in _stats.items() if key.startswith(prefix)]

    # -- pickling: only the queue name and config travel

    def __getstate__(self) -> dict[str, Any]:
        return {"queue": self.queue, "config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.queue = state["queue"]
        self.config = state["config"]


# --------------------------------------------------------------------------- result store


class _Results:
    """The results of one cluster ``name``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[str, TaskResult] = {}
        self.seq: dict[str, int] = {}  # save order, to order results stopped at the same time
        self.by_group: dict[str | None, dict[str, None]] = collections.defaultdict(dict)
        self.by_name: dict[str, dict[str, None]] = collections.defaultdict(dict)
        self.counter = itertools.count()

    def put(self, result: TaskResult) -> None:
        self.discard(result.id)
        self.by_id[result.id] = result
        self.seq[result.id] = next(self.counter)
        self.by_group[result.group][result.id] = None
        self.by_name[result.name][result.id] = None

    def discard(self, task_id: str) -> TaskResult | None:
        old = self.by_id.pop(task_id, None)
        if old is not None:
            del self.seq[task_id]
            for index, key in ((self.by_group, old.group), (self.by_name, old.name)):
                members = index.get(key)
                if members is not None:
                    members.pop(task_id, None)
                    if not members:
                        del index[key]
        return old

    def newest_first(self, ids: Iterable[str]) -> list[TaskResult]:
        found = [self.by_id[i] for i in ids]
        found.sort(key=lambda r: (r.stopped, self.seq[r.id]), reverse=True)
        return found

    def prune(self, limit: int, per: str | None, like: TaskResult) -> None:
        """Keep the ``limit`` newest successes of ``like``'s partition."""
        if per == "group":
            candidates = self.by_group.get(like.group, {})
        elif per == "name":
            candidates = self.by_name.get(like.name, {})
        else:
            candidates = self.by_id
        successes = [
            r for r in (self.by_id[i] for i in candidates)
            if r.success and not r.pinned and (per != "func" or r.func == like.func)
        ]
        if len(successes) > limit:
            for old in self.newest_first(r.id for r in successes)[limit:]:
                self.discard(old.id)


_stores: dict[str, _Results] = {}
_stores_lock = threading.Lock()


class MemoryResultStore(ResultStore):
    """A thread-safe in-process result store shared by every instance with the same
    cluster ``name``. Results are stored and returned as copies."""

    def __init__(self, *, config: Config | None = None) -> None:
        super().__init__(config=config)

    def _results(self) -> _Results:
        name = self.config.name
        results = _stores.get(name)
        if results is None:
            with _stores_lock:
                results = _stores.setdefault(name, _Results())
        return results

    def save(self, result: TaskResult) -> TaskResult:
        return self.save_many([result])[0]

    def save_many(self, results: Iterable[TaskResult]) -> list[TaskResult]:
        incoming = list(results)
        copies = copy.deepcopy(incoming)  # once, outside the lock
        limit, per = self.config.save_limit, self.config.save_limit_per
        store = self._results()
        kept: list[TaskResult | None] = []  # what is now stored, None if not kept
        with store.lock:
            for new in copies:
                stored = store.by_id.get(new.id)
                if stored is not None and stored.success:
                    kept.append(stored)  # a success is final
                    continue
                if new.success and limit < 0 and not new.pinned:
                    kept.append(None)  # successes are not kept
                    continue
                if stored is not None:
                    new.attempt_count = stored.attempt_count + 1
                store.put(new)
                if new.success and limit > 0 and not new.pinned:
                    store.prune(limit, per, new)
                kept.append(store.by_id.get(new.id))
            kept = copy.deepcopy(kept)
        return [k if k is not None else r for k, r in zip(kept, incoming, strict=True)]

    def get(self, task_id: str) -> TaskResult | None:
        store = self._results()
        with store.lock:
            found = store.by_id.get(task_id)
            return copy.deepcopy(found)

    def get_by_name(self, name: str) -> TaskResult | None:
        store = self._results()
        with store.lock:
            found = store.newest_first(store.by_name.get(name, ()))
            return copy.deepcopy(found[0]) if found else None

    def get_group(self, group: str, *, failures: bool = False) -> list[TaskResult]:
        store = self._results()
        with store.lock:
            found = store.newest_first(store.by_group.get(group, ()))
            return copy.deepcopy([r for r in found if failures or r.success])

    def count_group(self, group: str, *, failures: bool = False) -> int:
        store = self._results()
        with store.lock:
            members = [store.by_id[i] for i in store.by_group.get(group, ())]
            return sum(1 for r in members if not failures or not r.success)

    def delete(self, task_id: str) -> bool:
        store = self._results()
        with store.lock:
            return store.discard(task_id) is not None

    def delete_group(self, group: str) -> int:
        store = self._results()
        with store.lock:
            members = list(store.by_group.get(group, ()))
            for task_id in members:
                store.discard(task_id)
            return len(members)

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config = state["config"]
