"""The task API of Django Q2: ``async_task``, results, groups, ``async_iter``,
``async_chain``, cached results and the ``AsyncTask`` / ``Iter`` / ``Chain`` classes.

Differences from Django Q2, on purpose:

* ``sync`` runs the task through the signing codec, executes it, *saves* the
  result (failures too) and runs the hooks, then re-raises the task's exception
  to the caller (Django Q2 propagates it but keeps no failure). The exception
  carries a note with the task id. ``async_iter`` and ``async_chain`` in sync
  mode run every part or link and raise nothing: failures are saved.
* ``timeout`` may be a float; ``timeout=None`` given explicitly means "no
  timeout for this task"; anything else is a ``ValueError`` at enqueue time.
* ``task_name`` follows the ``q_options`` rule like every other option (Django
  Q2 always consumed a ``task_name`` keyword); an unknown ``q_options`` key is
  a ``TypeError`` instead of being ignored.
* ``result`` / ``fetch`` find a task that returned ``None``. Waiting is the result
  store's :meth:`~qhive.contracts.ResultStore.wait`: woken by the store's
  announcement of the save (the Redis store, the ORM store on PostgreSQL), else a
  backoff (5 ms doubling up to 250 ms) instead of querying every 10 ms.
* A 32-hex-digit ``task_id`` is looked up as an id only; anything else as a name.
* Cached results are keyed by the project ``name``, so ``result(id, cached=True)``
  finds the result of a task routed to any cluster (Django Q2 looks under the
  default cluster only). Group membership in the cache is kept without a
  read-modify-write of a list (see ``qhive_store_cache``).
* ``async_iter`` works with any result store: parts go where the task's results
  go (the cache only with ``cached``), are kept whatever ``save_limit`` says,
  and are collated *in the order of the arguments* once each has a result.
  Function keyword arguments reach every part, also next to ``q_options``.
* A chain goes on when a link was not saved (``save=False``, ``save_limit=-1``;
  Django Q2 stops there). The next link runs once a link's outcome is final:
  at once after a success; after a failure once it is not delivered again
  (``ack_failures``, ``max_attempts`` reached, or a broker without receipts) —
  so with the defaults (a failing task is retried) a chain waits for its
  failing link's retries. Links run in the cluster that ran the previous one
  unless a link names another with ``cluster``.

Not in Django Q2: :func:`status` tells where a task is now (queued, running —
where, since when, how far — succeeded, failed), and a task reports how far it
got with ``progress(0.4, "step 2")``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.db import IntegrityError, router, transaction
from django.utils import timezone
from qhive.contracts import Broker, ResultStore, TaskResult
from qhive.naming import humanize
from qhive.progress import progress as progress
from qhive.running import TaskState, TaskStatus, task_state
from qhive.task import OPTION_KEYS, chain_link, derived_id, func_name, func_ref
from qhive.task import split_options as split_options

from qhive_django.conf import get_config, get_pipeline
from qhive_django.results import as_task, group_records, records

__all__ = [
    "OPTION_KEYS", "AsyncTask", "Chain", "Iter", "TaskState", "TaskStatus", "async_chain",
    "async_iter", "async_task", "count_group", "delete_cached", "delete_group", "fetch",
    "fetch_group", "progress", "queue_size", "result", "result_group", "schedule", "status",
]

logger = logging.getLogger("qhive")

_TASK_ID = re.compile(r"[0-9a-f]{32}")
#: Options only async_iter / async_chain set.
_INTERNAL = {"iter_count": "async_iter", "iter_cached": "async_iter"}


# --------------------------------------------------------------------------- enqueue


def async_task(func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> str:
    """Queue ``func(*args, **kwargs)`` for the cluster and return the task id.

    Options (see :data:`OPTION_KEYS`) are taken out of ``kwargs``; put them in
    ``q_options={...}`` to pass a same-named keyword to the function instead.
    ``cluster`` routes to that cluster's queue; ``broker`` (a qhive
    :class:`~qhive.contracts.Broker`) wins over it. ``sync`` (or
    ``Q_CLUSTER['sync']``) runs the task here and now: see the module docstring.
    ``cached`` (``True`` or seconds; default ``Q_CLUSTER['cached']``) sends the
    result to the cache instead of the result store.

    Not in Django Q2 (:mod:`qhive.task_control`; a broker that cannot keep one
    raises :class:`~qhive.errors.UnsupportedOption` here): ``eta`` (an aware
    datetime) or ``countdown`` (seconds): not before then; ``priority`` (-10..10,
    higher first); ``max_attempts``, ``retry_on`` (exception classes) and
    ``backoff`` (seconds, ``"exponential"`` or a dict): this task's retry policy.
    """
    options, kwargs = split_options(kwargs)
    for key, owner in _INTERNAL.items():
        if options.get(key) is not None:
            raise TypeError(f"the {key!r} option is set by {owner}(); call {owner}() instead")
    if options.get("chain") is not None:
        options["chain"] = [chain_link(link) for link in options["chain"]]
    return _submit(func, args, kwargs, options)


def _submit(func: Callable[..., Any] | str, args: tuple, kwargs: dict[str, Any],
            options: dict[str, Any], *, task_id: str | None = None,
            raise_errors: bool = True) -> str:
    """Send (or run, ``sync``) through the pipeline of the task's ``cluster``."""
    options = dict(options)
    pipeline = get_pipeline(options.pop("cluster", None))
    return pipeline.submit(func, args, kwargs, options, task_id=task_id,
                           raise_errors=raise_errors)


def queue_size(cluster: str | Broker | None = None, *, broker: Broker | None = None) -> int:
    """Tasks waiting in the queue of ``cluster`` (or ``broker``), not those being processed."""
    if isinstance(cluster, Broker):  # Django Q2's queue_size(broker)
        cluster, broker = None, cluster
    return (broker or get_pipeline(cluster).broker).queue_size()


# --------------------------------------------------------------------------- iter and chain


def async_iter(func: Callable[..., Any] | str, args_iter: Iterable[Any], **kwargs: Any) -> str:
    """Queue ``func`` once per element of ``args_iter`` and return the id under which
    the collated result — a list of every part's result, in the order of
    ``args_iter`` — appears once all parts have run: ``result(id)``.

    A non-tuple element is one positional argument. Takes the options of
    :func:`async_task` except ``hook``; ``cached`` keeps the parts *and* the
    collated result in the cache; the parts form the group ``id``.
    """
    options, kwargs = split_options(kwargs)
    options.pop("hook", None)  # as in Django Q: an iter has no per-part hook
    for key in ("chain", "iter_count", "iter_cached", "group"):
        if options.pop(key, None) is not None:
            raise TypeError(f"async_iter() sets {key!r} itself")
    arguments = [a if isinstance(a, tuple) else (a,) for a in args_iter]
    config = get_config(options.get("cluster"))
    cached = options.get("cached")
    cached = config.cached if cached is None else cached
    group = uuid.uuid4().hex
    if not arguments:  # nothing to wait for: the collated result is the empty list
        pipeline = get_pipeline(options.get("cluster"))
        now = dt.datetime.now(dt.UTC)
        store = pipeline.cache_store(cached) if cached else pipeline.result_store
        store.save(TaskResult(id=group, name=humanize(group), func=func_name(func), started=now,
                              stopped=now, success=True, result=[], cluster=config.cluster_name))
        return group
    options.update(group=group, iter_count=len(arguments), cached=cached or None,
                   iter_cached=cached or None)
    for index, args in enumerate(arguments):
        _submit(func, args, kwargs, options, task_id=derived_id(group, f"part-{index}"),
                raise_errors=False)
    return group


def async_chain(chain: Iterable[Any], group: str | None = None, cached: bool | int | None = None,
                sync: bool | None = None, broker: Broker | None = None) -> str:
    """Queue the links of ``chain`` to run one after the other; return the chain's
    group id. A link is ``func``, ``(func,)``, ``(func, args)`` or ``(func, args,
    kwargs)``; ``kwargs`` may hold ``async_task`` options (``cluster`` to route a
    link). ``chain`` itself is not changed. See the module docstring for failures.
    """
    links = [chain_link(item) for item in chain]
    if not links:
        raise ValueError("async_chain() needs at least one link")
    first, rest = links[0], links[1:]
    group = group or uuid.uuid4().hex
    options = {**first["options"], "group": group, "cached": cached, "sync": sync,
               "broker": broker, "chain": rest or None}
    _submit(first["func"], first["args"], first["kwargs"], options, raise_errors=False)
    return group


# --------------------------------------------------------------------------- schedules


def schedule(func: Callable[..., Any] | str, *args: Any, name: str | None = None,
             hook: Callable[..., Any] | str | None = None, schedule_type: str = "O",
             minutes: int | None = None, repeats: int = -1, next_run: dt.datetime | None = None,
             cron: str | None = None, cluster: str | None = None,
             intended_date_kwarg: str | None = None, seconds: int | None = None,
             **kwargs: Any) -> Any:
    """Create a :class:`~qhive_django.models.Schedule` and return it (Django Q2's
    ``schedule``). Other keywords, ``q_options`` included, are the task's ``kwargs``.

    :raises django.db.IntegrityError: a schedule with this ``name`` exists.
    :raises django.core.exceptions.ValidationError: a bad cron expression, type,
        argument that cannot be stored, ``q_options`` key, ...
    """
    # The models need the app registry; async_task works before Django is set up.
    from qhive_django.models import Schedule

    for label, value in (("func", func), ("hook", hook)):
        if value is not None and not isinstance(func_ref(value), str):
            raise TypeError(f"schedule({label}=...) must be a dotted path or a module-level "
                            f"function, got {value!r}")
    item = Schedule(
        name=name, func=func_ref(func), hook=hook and func_ref(hook), args=args,
        kwargs=kwargs, schedule_type=schedule_type, minutes=minutes, seconds=seconds,
        repeats=repeats, next_run=next_run or timezone.now(), cron=cron, cluster=cluster,
        intended_date_kwarg=intended_date_kwarg,
    )
    item.full_clean(validate_unique=False)  # the database checks the name, without a race
    try:
        with transaction.atomic(using=router.db_for_write(Schedule)):
            item.save()
    except IntegrityError as exc:
        if name is not None and Schedule.objects.filter(name=name).exists():
            raise IntegrityError(f"A schedule with the same name already exists: {name!r}") \
                from exc
        raise
    return item


# --------------------------------------------------------------------------- results


def result(task_id: str | uuid.UUID, wait: float = 0, cached: bool | None = None, *,
           cluster: str | None = None) -> Any:
    """The result of a task by id or name: its return value, or the error text of a
    failure; ``None`` if not done. ``wait``: milliseconds to wait, ``-1`` for ever."""
    found = _wait_for(task_id, _store(cached, cluster), _deadline(wait))
    return found.result if found is not None else None


def fetch(task_id: str | uuid.UUID, wait: float = 0, cached: bool | None = None, *,
          cluster: str | None = None) -> Any:
    """The executed task by id or name, or ``None``: the result store's record of it
    (:mod:`qhive_django.results`: a ``Task`` while ``qhive_store_orm`` is installed —
    a saved row with the ORM result store, an unsaved one from other stores), else a
    :class:`qhive.contracts.TaskResult`. ``wait`` as in :func:`result`."""
    store = _store(cached, cluster)
    found = _wait_for(task_id, store, _deadline(wait))
    return as_task(store, found) if found is not None else None


def status(task_id: str | uuid.UUID, cached: bool | None = None, *,
           cluster: str | None = None) -> TaskState:
    """Where a task is now: ``queued``, ``running`` (on which cluster, host and worker,
    since when, with the progress it reported), ``succeeded`` or ``failed`` (with its
    saved result). Not in Django Q2 (``fetch`` sees finished tasks only). A task no
    cluster runs and no store holds reads as queued, as Celery's ``PENDING`` does:
    also an id nobody enqueued. See :mod:`qhive.running`."""
    key = task_id.hex if isinstance(task_id, uuid.UUID) else str(task_id)
    return task_state(get_pipeline(cluster), key, _lookup(key, _store(cached, cluster)))


def delete_cached(task_id: str | uuid.UUID, broker: Broker | None = None, *,
                  cluster: str | None = None) -> bool:
    """Remove a cached result; True if there was one. (``broker`` is accepted for
    Django Q2's signature; cached results are kept per project, not per queue.)"""
    key = task_id.hex if isinstance(task_id, uuid.UUID) else str(task_id)
    return get_pipeline(cluster).cache_store().delete(key)


def result_group(group_id: str, failures: bool = False, wait: float = 0,
                 count: int | None = None, cached: bool | None = None, *,
                 cluster: str | None = None) -> list[Any] | None:
    """The results of a group, last finished first; successes only unless
    ``failures``; ``None`` while it has none. With ``count``, first wait until the
    group has that many results (failures included) — for ever when ``wait`` is
    not positive, as in Django Q2."""
    found = _group(_store(cached, cluster), group_id, failures, wait, count)
    return [r.result for r in found] if found else None


def fetch_group(group_id: str, failures: bool = True, wait: float = 0,
                count: int | None = None, cached: bool | None = None, *,
                cluster: str | None = None) -> Any:
    """The tasks of a group (see :func:`fetch` for what they are), last finished
    first; failures too unless ``failures`` is False; ``None`` while it has none.
    ``wait`` and ``count`` as in :func:`result_group`."""
    store = _store(cached, cluster)
    found = _group(store, group_id, failures, wait, count)
    if not found:
        return None
    rows = group_records(store, group_id, found, failures)  # Django Q2: a QuerySet of Tasks
    return records(store, found) if rows is None else rows


def count_group(group_id: str, failures: bool = False, cached: bool | None = None, *,
                cluster: str | None = None) -> int | None:
    """How many tasks of a group have a result (failures included); with
    ``failures`` only the failed ones. From the cache, ``None`` for a group it does
    not know (as Django Q2: its group key is gone)."""
    store = _store(cached, cluster)
    count = store.count_group(group_id, failures=failures)
    if count == 0 and store is not get_pipeline(cluster).result_store and (
            not failures or store.count_group(group_id) == 0):
        return None
    return count


def delete_group(group_id: str, tasks: bool = False, cached: bool | None = None, *,
                 cluster: str | None = None) -> Any:
    """Forget a group. Where the store offers its records as a query (the ORM result
    store's ``Task`` rows, see :mod:`qhive_django.results`): ``tasks=False`` only
    clears the tasks' group label (returns how many), ``tasks=True`` deletes them
    (returns what ``QuerySet.delete()`` returns). Other stores keep no label apart
    from the result, so they delete the group's results and return how many (as
    Django Q2 does for cached results)."""
    store = _store(cached, cluster)
    rows = group_records(store, group_id, [], failures=True)
    if rows is None:
        return store.delete_group(group_id)
    return rows.delete() if tasks else rows.update(group=None)


def _store(cached: bool | None, cluster: str | None) -> ResultStore:
    pipeline = get_pipeline(cluster)
    if cached if cached is not None else pipeline.config.cached:
        return pipeline.cache_store()
    return pipeline.result_store


def _key(task_id: str | uuid.UUID) -> str:
    return task_id.hex if isinstance(task_id, uuid.UUID) else str(task_id)


def _lookup(task_id: str | uuid.UUID, store: ResultStore) -> Callable[[], TaskResult | None]:
    key = _key(task_id)
    if _TASK_ID.fullmatch(key):
        return lambda: store.get(key)
    return lambda: store.get_by_name(key)


def _wait_for(task_id: str | uuid.UUID, store: ResultStore,
              deadline: float | None) -> TaskResult | None:
    """The result by id or name, waited for until ``deadline`` (see :func:`_deadline`)
    by the store: woken by its saves where it can, else polling."""
    key = _key(task_id)
    about = {"task_id": key} if _TASK_ID.fullmatch(key) else {"name": key}
    return store.wait(_lookup(key, store), deadline, **about)


def _group(store: ResultStore, group_id: str, failures: bool, wait: float,
           count: int | None) -> list[TaskResult]:
    deadline = _deadline(wait)
    if count:
        # Django Q2: with a count, a wait that is not positive means "until it is there".
        enough = store.wait(lambda: store.count_group(group_id) >= count or None,
                            deadline if wait > 0 else None, group=group_id)
        if not enough:
            return []
    return store.wait(lambda: store.get_group(group_id, failures=failures) or None, deadline,
                      group=group_id) or []


def _deadline(wait: float) -> float | None:
    """``wait`` milliseconds from now as a monotonic deadline; ``None``: for ever
    (a negative wait); ``0``: look once."""
    return None if wait < 0 else time.monotonic() + wait / 1000


# --------------------------------------------------------------------------- classes


class _Option:
    """An ``async_task`` option of :class:`AsyncTask`, kept in its kwargs (or q_options)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    def __get__(self, task: AsyncTask | None, owner: type | None = None) -> Any:
        if task is None:
            return self
        return task._options().get(self.key)

    def __set__(self, task: AsyncTask, value: Any) -> None:
        task._options()[self.key] = value
        task.started = False  # the result of the last run no longer fits


class AsyncTask:
    """``async_task`` as an object: set options, :meth:`run`, then :meth:`result`.

    Changing an option after a run invalidates the result until the next run.
    """

    broker = _Option()
    sync = _Option()
    save = _Option()
    hook = _Option()
    group = _Option()
    # not in Django Q2 (qhive.task_control)
    eta = _Option()
    countdown = _Option()
    priority = _Option()
    max_attempts = _Option()
    retry_on = _Option()
    backoff = _Option()

    def __init__(self, func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> None:
        self.id = ""
        self.started = False
        self.func = func
        self.args = args
        self.kwargs = kwargs

    def _options(self) -> dict[str, Any]:
        q_options = self.kwargs.get("q_options")
        return q_options if isinstance(q_options, dict) else self.kwargs

    @property
    def _cluster(self) -> str | None:
        return self._options().get("cluster")

    @property
    def cached(self) -> Any:
        value = self._options().get("cached")
        return get_config(self._cluster).cached if value is None else value

    @cached.setter
    def cached(self, value: Any) -> None:
        self._options()["cached"] = value
        self.started = False

    def run(self) -> str:
        self.id = async_task(self.func, *self.args, **self.kwargs)
        self.started = True
        return self.id

    def result(self, wait: float = 0) -> Any:
        if self.started:
            return result(self.id, wait=wait, cached=self.cached, cluster=self._cluster)
        return None

    def fetch(self, wait: float = 0) -> Any:
        if self.started:
            return fetch(self.id, wait=wait, cached=self.cached, cluster=self._cluster)
        return None

    def result_group(self, failures: bool = False, wait: float = 0,
                     count: int | None = None) -> Any:
        if self.started and self.group:
            return result_group(self.group, failures=failures, wait=wait, count=count,
                                cached=self.cached, cluster=self._cluster)
        return None

    def fetch_group(self, failures: bool = True, wait: float = 0,
                    count: int | None = None) -> Any:
        if self.started and self.group:
            return fetch_group(self.group, failures=failures, wait=wait, count=count,
                               cached=self.cached, cluster=self._cluster)
        return None


class Iter:
    """:func:`async_iter` as an object: :meth:`append` argument sets, :meth:`run`,
    then :meth:`result` (the list of results, in the order of the arguments)."""

    def __init__(self, func: Callable[..., Any] | str | None = None,
                 args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
                 cached: bool | int | None = None, sync: bool | None = None,
                 broker: Broker | None = None) -> None:
        self.func = func
        self.args = list(args or [])
        self.kwargs = dict(kwargs or {})
        self.cached = cached
        self.sync = sync
        self.broker = broker
        self.id = ""
        self.started = False

    def append(self, *args: Any) -> int:
        """Add one set of arguments; return how many sets there are."""
        self.args.append(args)
        self.started = False
        return self.length()

    def run(self) -> str:
        if self.func is None:
            raise TypeError("Iter.run() needs a function: Iter(func, ...)")
        options = {k: v for k, v in (("cached", self.cached), ("sync", self.sync),
                                     ("broker", self.broker)) if v is not None}
        self.id = async_iter(self.func, self.args, **self.kwargs, **options)
        self.started = True
        return self.id

    def result(self, wait: float = 0) -> Any:
        if self.started:
            return result(self.id, wait=wait, cached=self.cached)
        return None

    def fetch(self, wait: float = 0) -> Any:
        if self.started:
            return fetch(self.id, wait=wait, cached=self.cached)
        return None

    def length(self) -> int:
        return len(self.args)


class Chain:
    """:func:`async_chain` as an object: :meth:`append` links, :meth:`run`, then
    :meth:`result` (the results of the saved links, last first)."""

    def __init__(self, chain: Iterable[Any] | None = None, group: str | None = None,
                 cached: bool | int | None = None, sync: bool | None = None,
                 broker: Broker | None = None) -> None:
        self.chain = list(chain or [])
        self.group = group or ""
        self.cached = cached
        self.sync = sync
        self.broker = broker
        self.started = False

    def append(self, func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> int:
        """Add a link (the arguments of :func:`async_task`); return the chain's length.
        After a run, the earlier results leave the group (as in Django Q2)."""
        self.chain.append((func, args, kwargs))
        if self.started:
            delete_group(self.group, cached=self.cached)
            self.started = False
        return self.length()

    def run(self) -> str:
        self.group = async_chain(self.chain, group=self.group or None, cached=self.cached,
                                 sync=self.sync, broker=self.broker)
        self.started = True
        return self.group

    def result(self, wait: float = 0) -> Any:
        """The results once every saved link has one (``wait`` as in :func:`result`)."""
        if self.started:
            return result_group(self.group, wait=wait, count=self._saved_links(),
                                cached=self.cached)
        return None

    def fetch(self, failures: bool = True, wait: float = 0) -> Any:
        if self.started:
            return fetch_group(self.group, failures=failures, wait=wait,
                               count=self._saved_links(), cached=self.cached)
        return None

    def current(self) -> int | None:
        """How many links have finished (the index of the one running), or None."""
        if self.started:
            return count_group(self.group, cached=self.cached)
        return None

    def length(self) -> int:
        return len(self.chain)

    def _saved_links(self) -> int:
        """Links whose result a group lookup will find (``save=False`` ones are not kept)."""
        config = get_config()
        cached = self.cached if self.cached is not None else config.cached
        keeps = config.save_limit >= 0 or bool(cached)  # the cache keeps what it is given
        links = [chain_link(item)["options"] for item in self.chain]
        return sum(1 for options in links if options.get("save", keeps))
