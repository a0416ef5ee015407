"""The five backend contracts: what a broker, result store, serializer, signer
and error reporter must do.

A plugin subclasses one of these, registers it under the matching entry-point
group (``qhive.brokers``, ``qhive.result_stores``, ``qhive.serializers``,
``qhive.signers``, ``qhive.reporters``) and proves it with the matching suite
of ``qhive-testkit``. Drivers are built by :mod:`qhive.drivers` with
``config=`` (the cluster's :class:`qhive.config.Config`) and the driver's own
keyword options; an option the constructor does not take is a config error.

Every driver must survive pickling (clusters hand them to worker processes):
keep connections in attributes that ``__getstate__`` drops and reopen lazily.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from qhive.config import Config

T = TypeVar("T")


# --------------------------------------------------------------------------- brokers


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a broker promises; the contract suite tests exactly what is declared.

    :param receipts: a dequeued message stays with the broker until acknowledged,
        and comes back after ``config.retry`` seconds if it never is.
    :param bulk: ``dequeue(count=n)`` may return up to ``n`` messages at once.
    :param blocking: ``dequeue(timeout=t)`` returns as soon as a message arrives,
        instead of sleeping ``config.poll`` between looks.
    :param fifo: messages come out in the order they went in (one consumer);
        unordered brokers (an SQS standard queue) must say ``fifo=False``.
    :param stats: ``set_stat`` / ``get_stat`` / ``get_stats`` keep cluster
        statistics visible to other processes.
    :param shared: other processes (and a pickled copy of the broker) see the
        same queue; False only for in-process brokers such as ``memory``.
    :param touch: :meth:`Broker.touch` moves the receipt deadline of messages in
        flight to ``config.retry`` seconds from now (a cluster keeps a task it
        holds while its result store is down from being delivered again).
    :param delay: ``enqueue(payload, delay=s)`` and ``release(ack_id, delay=s)``
        keep the message from being taken for ``s`` seconds (``eta=``/``countdown=``,
        retries with a backoff). It is kept like any message — a restart of every
        cluster loses nothing — and a consumer waiting in ``dequeue(timeout=…)``
        takes it within a second of it falling due.
    :param priority: ``enqueue(payload, priority=p)``, ``p`` an int from
        :data:`PRIORITY_MIN` to :data:`PRIORITY_MAX` (default 0): of the messages
        that can be taken, those of a higher ``p`` come out first, in order among
        themselves. Strict: low ones wait as long as higher ones keep coming.
    """

    receipts: bool = False
    bulk: bool = False
    blocking: bool = False
    fifo: bool = True
    stats: bool = False
    shared: bool = True
    touch: bool = False
    delay: bool = False
    priority: bool = False


#: The range of ``priority=`` (``Capabilities.priority``): higher runs first.
PRIORITY_MIN, PRIORITY_MAX = -10, 10


def checked_delivery(plugin: str, delay: Any = 0.0, priority: Any = 0) -> tuple[float, int]:
    """``delay`` and ``priority`` of ``enqueue`` / ``release``, checked for a broker that
    declares them: a TypeError or ValueError naming ``plugin`` (e.g. ``"Redis broker"``)."""
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise TypeError(f"{plugin}: delay must be a number of seconds, "
                        f"got {type(delay).__name__} {delay!r}")
    if not 0 <= delay < math.inf:  # NaN too
        raise ValueError(f"{plugin}: delay must be a finite number of seconds >= 0, "
                         f"got {delay!r}")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"{plugin}: priority must be an int from {PRIORITY_MIN} to "
                        f"{PRIORITY_MAX}, got {type(priority).__name__} {priority!r}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(f"{plugin}: priority must be from {PRIORITY_MIN} to {PRIORITY_MAX} "
                         f"(higher first), got {priority!r}")
    return float(delay), int(priority)


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One message handed out by :meth:`Broker.dequeue`.

    :param ack_id: opaque handle for :meth:`Broker.acknowledge`, :meth:`Broker.fail`
        and :meth:`Broker.delete`.
    :param payload: the bytes given to :meth:`Broker.enqueue`, unchanged.
    :param deliveries: how many times this message has been handed out, this time
        included (``1`` the first time); ``None`` when the broker cannot count.
    """

    ack_id: str
    payload: bytes
    deliveries: int | None = None


class ProcessLocal:
    """For drivers that hold what belongs to one process — clients, connections, locks,
    caches: they create those in ``_init_local_state()`` and name them in
    ``local_state``. A pickled copy (what a cluster hands a worker process or another
    thread) leaves them behind and creates its own on unpickling."""

    #: The attributes ``_init_local_state()`` sets: not pickled, made anew in the copy.
    local_state: ClassVar[tuple[str, ...]] = ()

    def _init_local_state(self) -> None:
        """Create this process's clients, locks and caches (called by ``__init__`` and
        on unpickling)."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self.local_state:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_local_state()


class StatsKeeper:
    """Cluster statistics: short-lived values other processes read (``qmonitor``).

    Kept by a broker that declares ``Capabilities.stats``, else by a result store
    that declares ``keeps_stats``; the defaults say the driver keeps none.
    """

    def set_stat(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any value."""
        raise NotImplementedError(f"{type(self).__name__} keeps no statistics")

    def get_stat(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None if absent or expired."""
        raise NotImplementedError(f"{type(self).__name__} keeps no statistics")

    def get_stats(self, prefix: str) -> list[bytes]:
        """Every live value whose key starts with ``prefix``."""
        raise NotImplementedError(f"{type(self).__name__} keeps no statistics")


class Broker(StatsKeeper, ABC):
    """A queue of opaque, signed task packages.

    ``queue`` is the queue this instance reads and writes (the cluster name).
    The default implementations of the optional methods are correct but slow;
    brokers override what their server does better.
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Building this broker reads its settings and opens no connection, so the checks
    #: (``manage.py check``, ``qplugins check``, ``qcluster`` before it starts) build the
    #: selected one to report a bad option or a missing setting before any process runs.
    #: Leave it False for a broker whose ``__init__`` connects.
    builds_offline: ClassVar[bool] = False

    def __init__(self, queue: str = "default", *, config: Config | None = None) -> None:
        if config is None:
            config = Config()
        self.queue = queue
        self.config = config

    # -- required
    @abstractmethod
    def enqueue(self, payload: bytes) -> str:
        """Append ``payload`` to the queue and return the broker's id for it.

        A broker that declares ``capabilities.delay`` also takes ``delay=`` (seconds,
        a float >= 0), one that declares ``capabilities.priority`` takes
        ``priority=``; the core passes them only to such a broker, and only when set.
        """

    @abstractmethod
    def dequeue(self, count: int = 1, timeout: float = 0.0) -> list[Message]:
        """Take up to ``count`` messages (one unless ``capabilities.bulk``).

        Waits at most ``timeout`` seconds for the first message and returns an
        empty list if none came. With ``capabilities.receipts`` a taken message
        is hidden, not removed, until :meth:`acknowledge` or :meth:`fail`.
        """

    @abstractmethod
    def acknowledge(self, ack_id: str) -> None:
        """The message was processed: remove it for good."""

    @abstractmethod
    def queue_size(self) -> int:
        """Messages waiting to be taken (not those in flight, nor delayed ones not due)."""

    @abstractmethod
    def purge_queue(self) -> None:
        """Remove every message of this queue, waiting or in flight."""

    # -- optional, with defaults
    def enqueue_many(self, payloads: Iterable[bytes]) -> list[str]:
        """Enqueue several payloads; brokers with a batch command override this."""
        return [self.enqueue(p) for p in payloads]

    def acknowledge_many(self, ack_ids: Iterable[str]) -> None:
        """Acknowledge several messages; brokers that can do it in one call override this."""
        for ack_id in ack_ids:
            self.acknowledge(ack_id)

    def fail(self, ack_id: str) -> None:
        """The message can never succeed (bad signature, out of attempts): drop it.

        Brokers with a dead-letter facility may move it there instead.
        """
        self.acknowledge(ack_id)

    def release(self, ack_id: str) -> None:
        """Give back a message the cluster took but will not run (it is stopping),
        so another cluster can take it at once. The default does nothing: with
        receipts the message comes back after ``config.retry`` seconds anyway.

        With ``capabilities.delay`` it also takes ``delay=`` (seconds): the message
        comes back then, its deliveries still counted (a retry with a backoff)."""

    def touch(self, ack_ids: Iterable[str]) -> None:
        """Keep messages in flight from being delivered again for another
        ``config.retry`` seconds (``capabilities.touch``). Messages no longer in
        flight are left alone. The default does nothing."""

    def delete(self, ack_id: str) -> None:
        """Remove a delivered message, as the admin's delete action does."""
        self.acknowledge(ack_id)

    def delete_queue(self) -> None:
        """Remove the queue itself; the default empties it."""
        self.purge_queue()

    def lock_size(self) -> int | None:
        """Messages in flight (taken, not yet acknowledged); ``None`` if unknown."""
        return None

    def ping(self) -> bool:
        """Talk to the server; return True or raise :class:`qhive.errors.BrokerConnectionError`."""
        return True

    def info(self) -> str:
        """One line for ``qinfo`` and ``qmonitor``, e.g. ``"Redis 7.0.15"``."""
        return type(self).__name__

    def close(self) -> None:
        """Release connections; the broker must still work if used again."""

    # -- statistics (``capabilities.stats``): see StatsKeeper

    # -- helper for brokers without a blocking wait
    #: how long after the last message :meth:`_poll` keeps looking every POLL_FLOOR s
    POLL_HOT = 0.5
    POLL_FLOOR = 0.005
    _poll_hot_until = 0.0
    _poll_pause = 0.0

    def _poll(self, take: Callable[[], list[T]], timeout: float) -> list[T]:
        """Call ``take`` until it returns something or ``timeout`` has passed.

        Right after work was found the pause between calls is a few milliseconds;
        once the queue has been empty for ``POLL_HOT`` seconds it doubles up to
        ``config.poll``. A busy queue is answered in milliseconds, an idle one
        costs one look every ``poll`` seconds, as in Django Q — whose fixed 0.2 s
        pause is added to every task's latency.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            got = take()
            now = time.monotonic()
            if got:
                self._poll_hot_until = now + self.POLL_HOT
                self._poll_pause = self.POLL_FLOOR
                return got
            if now >= deadline:
                return got
            if now >= self._poll_hot_until:
                self._poll_pause = min(max(self._poll_pause * 2, self.POLL_FLOOR),
                                       self.config.poll)
            time.sleep(min(self._poll_pause or self.config.poll, deadline - now))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} queue={self.queue!r}>"


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(slots=True)
class TaskResult:
    """What a result store keeps of one executed task (Django Q's ``Task`` row)."""

    id: str
    name: str
    func: str
    started: dt.datetime
    stopped: dt.datetime
    success: bool
    result: Any = None
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    hook: str | None = None
    group: str | None = None
    cluster: str | None = None
    attempt_count: int = 1
    #: Kept whatever ``save_limit`` says, until deleted: the parts of an
    #: ``async_iter`` waiting to be collated. Stores that prune must skip these.
    pinned: bool = False
    #: A failure that will be tried again: about when (aware). None otherwise.
    next_attempt: dt.datetime | None = None

    def time_taken(self) -> float:
        """Seconds between enqueue and the end of the run, as Django Q reports it."""
        return (self.stopped - self.started).total_seconds()


@dataclasses.dataclass(frozen=True, slots=True)
class ResultSummary:
    """What :meth:`ResultStore.summary` counts."""

    successes: int
    failures: int
    #: successes that stopped since the ``since`` asked for
    recent_successes: int
    #: their mean seconds from enqueue to end, None without any
    recent_mean_seconds: float | None


class ResultStore(StatsKeeper, ABC):
    """Keeps task results.

    Rules every store follows (the contract suite checks them):

    * a success is final: a later save of the same id changes nothing;
    * a failure is replaced by a later save of the same id and its
      ``attempt_count`` becomes the stored count plus one;
    * the ``config.save_limit`` successes that stopped last are kept (``0``
      unlimited, ``-1`` none), per ``config.save_limit_per`` value if set;
      failures are always kept, also when a later success is not;
    * ``pinned`` results are always kept and never counted by ``save_limit``.

    A store whose results expire on their own (a cache) sets
    :attr:`applies_save_limit` to False and keeps every result it is given.
    """

    #: Whether the store enforces ``save_limit`` / ``save_limit_per``.
    applies_save_limit: ClassVar[bool] = True

    def __init__(self, *, config: Config | None = None) -> None:
        if config is None:
            config = Config()
        self.config = config

    @abstractmethod
    def save(self, result: TaskResult) -> TaskResult:
        """Store ``result`` by the rules above; return what is now stored for its id
        (``attempt_count`` up to date), or ``result`` itself if it was not kept."""

    def save_many(self, results: Iterable[TaskResult]) -> list[TaskResult]:
        """Store several results; stores with batched writes override this."""
        return [self.save(r) for r in results]

    @abstractmethod
    def get(self, task_id: str) -> TaskResult | None:
        """The stored result with this id, or None."""

    @abstractmethod
    def get_by_name(self, name: str) -> TaskResult | None:
        """The stored result with this name that stopped last, or None."""

    @abstractmethod
    def get_group(self, group: str, *, failures: bool = False) -> list[TaskResult]:
        """Results of a group, last stopped first; successes only unless ``failures``."""

    @abstractmethod
    def count_group(self, group: str, *, failures: bool = False) -> int:
        """How many results a group has; with ``failures`` only the failed ones."""

    @abstractmethod
    def delete(self, task_id: str) -> bool:
        """Remove one result; True if there was one."""

    @abstractmethod
    def delete_group(self, group: str) -> int:
        """Remove every result of a group; return how many."""

    def get_many(self, task_ids: Iterable[str]) -> dict[str, TaskResult]:
        """The stored results with these ids, by id (ids not stored are left out).
        Stores that can read several in one round trip override this."""
        return {task_id: found for task_id in dict.fromkeys(task_ids)
                if (found := self.get(task_id)) is not None}

    def summary(self, since: dt.datetime) -> ResultSummary | None:
        """Counts over every stored result, for ``qinfo``, without loading them; None
        (the default) when the store cannot count them cheaply."""
        return None

    #: How :meth:`wait` polls: the first pause, doubling up to the longest (4 looks a
    #: second), so a result saved at once is seen in milliseconds.
    WAIT_FIRST_PAUSE = 0.005
    WAIT_LONGEST_PAUSE = 0.25

    def wait(self, look: Callable[[], T | None], deadline: float | None, *,
             task_id: str | None = None, name: str | None = None,
             group: str | None = None) -> T | None:
        """Call ``look()`` until it returns something other than None and return that,
        or None once ``deadline`` (a :func:`time.monotonic` time; None: no end) has
        passed. ``look`` runs at once, also when the deadline has passed: that is a
        single look. What ``look`` raises propagates.

        ``task_id``, ``name`` and ``group`` say which saves can change what ``look``
        finds: a save of a result with this id, this name or in this group (none
        given: any save). This default ignores them and polls (``WAIT_FIRST_PAUSE``
        doubling to ``WAIT_LONGEST_PAUSE``). A store whose backend can announce its
        saves overrides it to sleep until one of those saves is announced, adding no
        load while it waits; such an override must look after it starts listening
        (a save between the look and the sleep is not missed), look again whenever
        announcements may have been lost (a broken connection), and may fall back
        to this default.
        """
        found = look()
        pause = self.WAIT_FIRST_PAUSE
        while found is None:
            sleep = pause
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                sleep = min(pause, remaining)
            time.sleep(sleep)
            found = look()
            pause = min(pause * 2, self.WAIT_LONGEST_PAUSE)
        return found

    def close(self) -> None:
        """Release connections; the store must still work if used again."""

    def ping(self) -> bool:
        """Talk to the backend once (a cluster does, as it starts): return True, raise
        :class:`qhive.errors.SetupError` if it is not set up (a missing table), or
        another error if it cannot be reached. The default only returns True."""
        return True

    # -- statistics (``keeps_stats``), for brokers that keep none

    #: Whether :meth:`set_stat` / :meth:`get_stat` / :meth:`get_stats` keep cluster
    #: statistics visible to other processes, as a broker's ``Capabilities.stats``
    #: promises. Clusters keep their statistics here when their broker cannot. A store
    #: that can only on some backends (a cache store on a per-process cache cannot)
    #: makes this a property.
    keeps_stats: bool = False


# --------------------------------------------------------------------------- codec parts


class Serializer(ABC):
    """Turns a task package (a dict of plain Python values) into bytes and back.

    :meth:`loads` only ever sees bytes whose signature has been verified.
    Values it cannot encode raise :class:`qhive.errors.SerializationError`
    naming the value's type.
    """

    @abstractmethod
    def dumps(self, obj: Any) -> bytes: ...

    @abstractmethod
    def loads(self, data: bytes) -> Any: ...


class Signer(ABC):
    """Signs bytes and checks signatures.

    :param key: the secret (``SECRET_KEY`` under Django).
    :param salt: separates what different clusters sign (the cluster ``name``).
    :param fallback_keys: older secrets still accepted by :meth:`unsign`, so
        keys rotate without losing queued tasks (``SECRET_KEY_FALLBACKS``).
    """

    def __init__(
        self,
        *,
        key: str | bytes,
        salt: str = "default",
        fallback_keys: Iterable[str | bytes] = (),
        config: Config | None = None,
    ) -> None:
        if not key:
            raise ValueError(f"{type(self).__name__} needs a non-empty secret key")
        self.key = key
        self.salt = salt
        self.fallback_keys = tuple(fallback_keys)

    @abstractmethod
    def sign(self, data: bytes) -> bytes:
        """Return ``data`` with a signature made with the current key."""

    @abstractmethod
    def unsign(self, signed: bytes) -> bytes:
        """Return the original data, or raise :class:`qhive.errors.BadSignature`
        unless the current key or a fallback key made the signature."""

    def __repr__(self) -> str:  # never show the key
        return f"<{type(self).__name__} salt={self.salt!r}>"


class Reporter(ABC):
    """Sends task errors somewhere people will see them (Sentry, Rollbar, logs).

    Built with the options of its ``error_reporter`` entry as keyword arguments:
    declare them in ``__init__`` so an unknown option is a config error.
    :meth:`report` must never raise: a broken reporter must not turn into a
    lost result. It runs on a thread of its own (:mod:`qhive.reporting`), so it may
    block, but it should hand the report to its SDK's own transport and return.
    """

    def __init__(self, *, config: Config | None = None) -> None:
        self.config = config

    @abstractmethod
    def report(self, error: BaseException, task: Mapping[str, Any] | None = None) -> None:
        """Report ``error`` raised while running ``task`` (the task package)."""

    def flush(self, timeout: float) -> bool | None:
        """Send what :meth:`report` buffered, waiting at most ``timeout`` seconds; called
        as the process ends. Return False when something could not be sent in time.
        The default has nothing buffered."""
        return None
