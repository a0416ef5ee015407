"""The task API of Django Q2: ``async_task``, ``result``, ``fetch``, ``queue_size``, ``AsyncTask``.

Differences from Django Q2, on purpose:

* ``sync`` runs the task through the signing codec, executes it, *saves* the
  result (failures too) and runs the hooks, then re-raises the task's exception
  to the caller (Django Q2 propagates it but keeps no failure). The exception
  carries a note with the task id.
* ``timeout`` may be a float; ``timeout=None`` given explicitly means "no
  timeout for this task"; anything else is a ``ValueError`` at enqueue time.
* ``task_name`` follows the ``q_options`` rule like every other option (Django
  Q2 always consumed a ``task_name`` keyword); an unknown ``q_options`` key is
  a ``TypeError`` instead of being ignored.
* ``result`` / ``fetch`` find a task that returned ``None``, and wait with a
  backoff (5 ms doubling up to 250 ms) instead of querying every 10 ms.
* A 32-hex-digit ``task_id`` is looked up as an id only; anything else as a name.
"""

from __future__ import annotations

import difflib
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from qhive.contracts import Broker, ResultStore, TaskResult
from qhive.pipeline import Pipeline
from qhive.task import func_ref, new_task

from qhive_django.conf import get_config, get_pipeline

__all__ = ["OPTION_KEYS", "AsyncTask", "async_task", "fetch", "queue_size", "result"]

logger = logging.getLogger("qhive")

#: Keywords of ``async_task`` that are options, never arguments of the task
#: function (unless given in ``q_options``).
OPTION_KEYS = (
    "hook", "group", "save", "sync", "cached", "ack_failure", "iter_count", "iter_cached",
    "chain", "broker", "cluster", "timeout", "task_name",
)
# The options of async_chain / async_iter and cached results: not yet in qhive.
_NOT_YET = {
    "cached": "cached results (the 'cached' option and Q_CLUSTER['cached'])",
    "chain": "chains (async_chain)",
    "iter_count": "async_iter",
    "iter_cached": "async_iter",
}
_TASK_ID = re.compile(r"[0-9a-f]{32}")
#: The ORM result store's Django app; its results are fetched as ``Task`` rows.
ORM_STORE_APP = "qhive_store_orm"


# --------------------------------------------------------------------------- enqueue


def async_task(func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> str:
    """Queue ``func(*args, **kwargs)`` for the cluster and return the task id.

    Options (see :data:`OPTION_KEYS`) are taken out of ``kwargs``; put them in
    ``q_options={...}`` to pass a same-named keyword to the function instead.
    ``cluster`` routes to that cluster's queue; ``broker`` (a qhive
    :class:`~qhive.contracts.Broker`) wins over it. ``sync`` (or
    ``Q_CLUSTER['sync']``) runs the task here and now: see the module docstring.
    """
    if not (callable(func) or (isinstance(func, str) and func)):
        raise TypeError(f"async_task needs a callable or a dotted path, got {func!r}")
    options, kwargs = split_options(kwargs)
    broker = options.pop("broker", None)
    if broker is not None and not isinstance(broker, Broker):
        raise TypeError(f"async_task(broker=...) takes a qhive Broker, got {broker!r}")
    pipeline = get_pipeline(options.pop("cluster", None))
    sync = options.pop("sync", None)
    sync = pipeline.config.sync if sync is None else bool(sync)
    _refuse_not_yet(options, pipeline.config.cached)
    # None means "not given", except for timeout where it means "no timeout".
    options = {k: v for k, v in options.items() if v is not None or k == "timeout"}
    _check_options(options)
    if callable(options.get("hook")):
        options["hook"] = func_ref(options["hook"])  # a dotted path works in every process

    task = new_task(func, args, kwargs, **options)
    if sync:
        task["sync"] = True
    pipeline.pm.hook.qhive_pre_enqueue(task=task)
    if sync:
        return _run_sync(pipeline, task)
    target = broker or pipeline.broker
    pipeline.pm.hook.qhive_enqueue(task=task, broker=target, codec=pipeline.codec)
    logger.debug("enqueued task %s (%s) on queue %r", task["id"], task["name"], target.queue)
    return task["id"]


def split_options(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(options, function kwargs)`` by Django Q2's rule: an option named in a
    non-empty ``q_options`` comes from there and a same-named keyword stays the
    function's; every other option keyword is taken out of ``kwargs``."""
    kwargs = dict(kwargs)
    q_options = kwargs.pop("q_options", None) or {}
    if not isinstance(q_options, Mapping):
        raise TypeError(f"q_options must be a dict of options, got {q_options!r}")
    unknown = [key for key in q_options if key not in OPTION_KEYS]
    if unknown:
        hint = difflib.get_close_matches(str(unknown[0]), OPTION_KEYS, n=1)
        raise TypeError(f"unknown q_options key {unknown[0]!r}"
                        + (f" — did you mean {hint[0]!r}?" if hint else
                           f"; options are: {', '.join(OPTION_KEYS)}"))
    options = {}
    for key in OPTION_KEYS:
        if key in q_options:
            options[key] = q_options[key]
        elif key in kwargs:
            options[key] = kwargs.pop(key)
    return options, kwargs


def _refuse_not_yet(options: dict[str, Any], cached_default: Any) -> None:
    if options.get("cached", cached_default):
        raise NotImplementedError(f"{_NOT_YET['cached']} are not available in qhive yet; "
                                  "results go to the result store")
    for key in ("chain", "iter_count", "iter_cached"):
        if options.get(key) is not None:
            raise NotImplementedError(f"the {key!r} option belongs to {_NOT_YET[key]}, "
                                      "which is not available in qhive yet")
    options.pop("cached", None)


def _check_options(options: dict[str, Any]) -> None:
    timeout = options.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not timeout > 0):
        raise ValueError(f"async_task(timeout=...) must be a number of seconds > 0 or None, "
                         f"got {timeout!r}")
    hook = options.get("hook")
    if hook is not None and not (callable(hook) or isinstance(hook, str)):
        raise TypeError(f"async_task(hook=...) must be a callable or a dotted path, got {hook!r}")


def _run_sync(pipeline: Pipeline, task: dict[str, Any]) -> str:
    # Through the codec as a worker would receive it: what cannot travel fails here too.
    task = pipeline.codec.decode(pipeline.codec.encode(task))
    task.setdefault("cluster", pipeline.config.cluster_name)
    _stored, error = pipeline.run_here(task)
    if error is not None:
        error.add_note(f"raised by qhive task {task['id']} ({task['name']}) run with sync=True; "
                       f"its failure was saved")
        raise error
    return task["id"]


def queue_size(cluster: str | Broker | None = None, *, broker: Broker | None = None) -> int:
    """Tasks waiting in the queue of ``cluster`` (or ``broker``), not those being processed."""
    if isinstance(cluster, Broker):  # Django Q2's queue_size(broker)
        cluster, broker = None, cluster
    return (broker or get_pipeline(cluster).broker).queue_size()


# --------------------------------------------------------------------------- results


def result(task_id: str | uuid.UUID, wait: float = 0, cached: bool | None = None, *,
           cluster: str | None = None) -> Any:
    """The result of a task by id or name: its return value, or the error text of a
    failure; ``None`` if not done. ``wait``: milliseconds to wait, ``-1`` for ever."""
    found = _wait_for(_lookup(task_id, cached, cluster), wait)
    return found.result if found is not None else None


def fetch(task_id: str | uuid.UUID, wait: float = 0, cached: bool | None = None, *,
          cluster: str | None = None) -> Any:
    """The executed task by id or name, or ``None``: a ``Task`` row with the ORM
    result store, else a :class:`qhive.contracts.TaskResult`. ``wait`` as in :func:`result`."""
    store = _store(cached, cluster)
    found = _wait_for(_lookup(task_id, cached, cluster, store), wait)
    return as_task(store, found) if found is not None else None


def as_task(store: ResultStore, found: TaskResult) -> Any:
    """``found`` as the ORM store's ``Task`` row when ``store`` is that store, else itself."""
    app = getattr(store, "django_app", None) or type(store).__module__.partition(".")[0]
    if app != ORM_STORE_APP:
        return found
    from qhive_store_orm.models import Task

    alias = getattr(store, "alias", None)
    rows = Task.objects.using(alias) if alias else Task.objects
    return rows.filter(pk=found.id).first() or found  # not kept (save=False): the result


def _store(cached: bool | None, cluster: str | None) -> ResultStore:
    if cached if cached is not None else get_config(cluster).cached:
        raise NotImplementedError(f"{_NOT_YET['cached']} are not available in qhive yet")
    return get_pipeline(cluster).result_store


def _lookup(task_id: str | uuid.UUID, cached: bool | None, cluster: str | None,
            store: ResultStore | None = None) -> Callable[[], TaskResult | None]:
    store = store or _store(cached, cluster)
    key = task_id.hex if isinstance(task_id, uuid.UUID) else str(task_id)
    if _TASK_ID.fullmatch(key):
        return lambda: store.get(key)
    return lambda: store.get_by_name(key)


#: Pauses between looks while waiting: short at first, then no more than 4 looks a second.
FIRST_PAUSE, LONGEST_PAUSE = 0.005, 0.25


def _wait_for(look: Callable[[], TaskResult | None], wait: float) -> TaskResult | None:
    found = look()
    if found is not None or not wait:
        return found
    deadline = None if wait < 0 else time.monotonic() + wait / 1000
    pause = FIRST_PAUSE
    while found is None:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            pause = min(pause, remaining)
        time.sleep(pause)
        found = look()
        pause = min(pause * 2, LONGEST_PAUSE)
    return found


# --------------------------------------------------------------------------- AsyncTask

_GROUPS_NOT_YET = "group results are not available in qhive yet"


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
    def cached(self) -> Any:
        value = self._options().get("cached")
        return get_config(self._options().get("cluster")).cached if value is None else value

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
            return result(self.id, wait=wait, cached=self.cached,
                          cluster=self._options().get("cluster"))
        return None

    def fetch(self, wait: float = 0) -> Any:
        if self.started:
            return fetch(self.id, wait=wait, cached=self.cached,
                         cluster=self._options().get("cluster"))
        return None

    def result_group(self, failures: bool = False, wait: float = 0,
                     count: int | None = None) -> Any:
        raise NotImplementedError(_GROUPS_NOT_YET)

    def fetch_group(self, failures: bool = True, wait: float = 0,
                    count: int | None = None) -> Any:
        raise NotImplementedError(_GROUPS_NOT_YET)
