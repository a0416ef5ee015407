"""The task pipeline of one process: the selected drivers and the steps a task
goes through, from enqueue to a saved result.

enqueue: task dict -> ``qhive_pre_enqueue`` -> serializer -> zlib? -> signer -> broker
execute: broker -> verify -> decompress -> deserialize -> run -> result store
         -> follow-ups (next chain link, iter collation) -> hooks -> ack

The cluster runs these steps across processes; :meth:`Pipeline.drain` runs them
in the calling process (the core demo and tests).

Follow-ups (:mod:`qhive.follow_ups`) happen when a task's outcome is final: it
succeeded, or it failed and will not be delivered again (acknowledged by
``ack_failures`` / ``max_attempts``, or its broker has no receipts).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import pickle
import time
import traceback
from collections.abc import Callable
from functools import cached_property
from typing import Any

from qhive.codec import TaskCodec, build_codec
from qhive.config import Config
from qhive.contracts import Broker, Message, ResultStore, TaskResult
from qhive.drivers import build_driver
from qhive.errors import BadSignature, ConfigError, SerializationError, UnknownDriverError
from qhive.follow_ups import follow_up
from qhive.plugins import QhivePluginManager, get_plugin_manager
from qhive.reporting import Reporting, build_reporters, first_task_frame
from qhive.task import (
    check_options,
    check_package,
    func_name,
    func_ref,
    new_task,
    resolve_func,
)
from qhive.task_control import Retry, plan_retry
from qhive.task_control import prepare as prepare_control

#: The result store that ``cached=True`` / ``cached=<seconds>`` results go to.
CACHE_STORE = "cache"
#: How a project gets it: an extra of qhive-django (distribution qhive-store-cache).
CACHE_STORE_INSTALL = 'pip install "qhive-django[cache]"'

logger = logging.getLogger("qhive")


@dataclasses.dataclass(slots=True)
class Done:
    """A task that ran (or died trying), waiting to be saved and settled."""

    task: dict[str, Any]
    result: TaskResult
    ack_id: str | None = None
    deliveries: int | None = None
    error: BaseException | None = None


class Pipeline:
    """The drivers ``config`` selects, built on first use, and the task steps."""

    def __init__(self, config: Config, *, plugin_manager: QhivePluginManager | None = None):
        self.config = config
        self.pm = plugin_manager or get_plugin_manager(config)
        self._registered: list[Any] = []
        self._cache_stores: dict[int | None, ResultStore] = {}
        self._routes: dict[str, Pipeline] = {}
        self._reporting: Reporting | None = None
        self.owner: Pipeline | None = None  # the pipeline a for_thread() copy was made of
        self.pm.hook.qhive_configure.call_historic(kwargs={"config": config})

    # -- drivers
    def _build(self, kind: str, name: str, options: Any, option_key: str, **fixed: Any) -> Any:
        driver = build_driver(
            kind,
            name,
            dict(options),
            registry=self.pm.driver_registry,
            option_key=option_key,
            config=self.config,
            **fixed,
        )
        # Selected drivers are plugins too: they may implement lifecycle hooks.
        self.pm.register_checked(driver, name=f"{kind}:{name}:{id(driver)}")
        self._registered.append(driver)
        return driver

    @cached_property
    def broker(self) -> Broker:
        c = self.config
        return self._build("broker", c.broker, c.broker_options, "broker_options", queue=c.queue)

    @cached_property
    def result_store(self) -> ResultStore:
        c = self.config
        return self._build("result_store", c.result_store, c.result_store_options,
                           "result_store_options")

    def cache_store(self, cached: bool | int = True) -> ResultStore:
        """The store of cached results, keeping them ``cached`` seconds (``True``: until
        the cache evicts them). One instance per distinct timeout."""
        timeout = None if cached is True else int(cached)
        store = self._cache_stores.get(timeout)
        if store is None:
            try:
                store = self._build("result_store", CACHE_STORE, {"timeout": timeout}, "cached")
            except UnknownDriverError as exc:
                raise UnknownDriverError(f"{exc}. Cached results (cached=...) go to it: "
                                         f"{CACHE_STORE_INSTALL}") from exc
            self._cache_stores[timeout] = store
        return store

    def store_for(self, task: dict[str, Any]) -> ResultStore:
        """Where the result of ``task`` goes: the cache store when it is ``cached``."""
        cached = task.get("cached")
        return self.cache_store(cached) if cached else self.result_store

    def route(self, cluster: str | None) -> Pipeline:
        """The pipeline of ``cluster`` (this one for ``None`` or its own name), to send
        it follow-up tasks; other clusters' configs come from ``qhive_cluster_config``."""
        if cluster is None or cluster == self.config.cluster_name:
            return self
        pipeline = self._routes.get(cluster)
        if pipeline is None:
            config = self.pm.hook.qhive_cluster_config(name=cluster, config=self.config)
            if config is None:
                raise ConfigError(
                    f"cannot send a task to cluster {cluster!r}: no plugin knows its config "
                    f"(under Django, qhive_django reads Q_CLUSTER['ALT_CLUSTERS'])",
                    key="ALT_CLUSTERS")
            pipeline = self._routes[cluster] = Pipeline(config, plugin_manager=self.pm)
        return pipeline

    @cached_property
    def codec(self) -> TaskCodec:
        return build_codec(self.config, self.pm.driver_registry)

    @property
    def reporting(self) -> Reporting:
        """The configured error reporters that could be built, as a plugin."""
        return self.load_reporters()

    def load_reporters(self, *, quiet: bool = False) -> Reporting:
        """Build the reporters (once); ``quiet``: their failures were said elsewhere."""
        if self._reporting is None:
            self._reporting = Reporting(build_reporters(
                dict(self.config.error_reporter),
                lambda name, options: self._build("reporter", name, options,
                                                  f"error_reporter.{name}"),
                quiet=quiet))
            self.pm.register(self._reporting, name=f"reporters:{id(self)}")
            self._registered.append(self._reporting)
        return self._reporting

    def for_thread(self) -> Pipeline:
        """This pipeline with driver instances of its own (unpickled copies, which
        open their own connections), for another thread of the process: a thread
        that reconnects then closes only what it uses. Hooks stay with this pipeline's
        drivers; the copy registers nothing."""
        copy = object.__new__(Pipeline)
        copy.__dict__.update(self.__dict__)
        copy._registered, copy._cache_stores, copy._routes = [], {}, {}
        copy._reporting = None
        copy.owner = self
        for name in ("broker", "result_store"):
            driver = getattr(self, name)
            copy.__dict__[name] = pickle.loads(pickle.dumps(driver))
        return copy

    def close(self) -> None:
        if self._reporting is not None:
            self._reporting.flush()
        for name in ("broker", "result_store"):
            if name in self.__dict__:
                self.__dict__[name].close()
        for store in self._cache_stores.values():
            store.close()
        self._cache_stores.clear()
        for pipeline in self._routes.values():
            pipeline.close()
        self._routes.clear()
        for plugin in self._registered:
            self.pm.unregister(plugin)
        self._registered.clear()

    # -- enqueue
    def enqueue(
        self,
        func: Callable[..., Any] | str,
        args: tuple = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """Send a task; return its id. ``options``: task_name, hook, group, timeout, ..."""
        return self.send(new_task(func, args, kwargs, **options))

    def submit(self, func: Callable[..., Any] | str, args: tuple, kwargs: dict[str, Any],
               options: dict[str, Any], *, task_id: str | None = None,
               raise_errors: bool = True) -> str:
        """Validate ``options`` (split from the function's keywords, see
        :func:`qhive.task.split_options`), build the package and send it — or run it
        here, ``sync`` — the way ``async_task`` does; return the task id.

        ``cluster`` routes to that cluster's pipeline (:meth:`route`); ``broker`` (a
        :class:`~qhive.contracts.Broker`) wins over it; ``cached`` defaults to the
        config's. A ``sync`` task's exception is re-raised (unless not
        ``raise_errors``) with a note; its failure is saved first.
        """
        if not (callable(func) or (isinstance(func, str) and func)):
            raise TypeError(f"async_task needs a callable or a dotted path, got {func!r}")
        options = dict(options)
        pipeline = self.route(options.pop("cluster", None))
        broker = options.pop("broker", None)
        if broker is not None and not isinstance(broker, Broker):
            raise TypeError(f"async_task(broker=...) takes a qhive Broker, got {broker!r}")
        config = pipeline.config
        sync = options.pop("sync", None)
        sync = config.sync if sync is None else bool(sync)
        if options.get("cached") is None:
            options["cached"] = config.cached
        # None means "not given", except for timeout where it means "no timeout".
        options = {k: v for k, v in options.items()
                   if (v is not None or k == "timeout") and not (k == "cached" and v is False)}
        check_options(options)
        prepare_control(options, None if sync else broker or pipeline.broker)
        if options.get("cached"):  # no cache store installed: say so here, not in a worker
            pipeline.cache_store(options["cached"])
        if callable(options.get("hook")):
            options["hook"] = func_ref(options["hook"])  # a dotted path works in every process

        task = new_task(func, args, kwargs, task_id=task_id, **options)
        if not sync:
            pipeline.send(task, broker=broker)
            logger.debug("enqueued task %s (%s) on queue %r", task["id"], task["name"],
                         (broker or pipeline.broker).queue)
            return task["id"]
        task["sync"] = True
        pipeline.pm.hook.qhive_pre_enqueue(task=task)
        _stored, error = pipeline.run_sync(task)
        if error is not None and raise_errors:
            error.add_note(f"raised by qhive task {task['id']} ({task['name']}) run with "
                           f"sync=True; its failure was saved")
            raise error
        return task["id"]

    def send(self, task: dict[str, Any], broker: Broker | None = None) -> str:
        """``qhive_pre_enqueue``, then a task package to ``broker`` (default: this
        cluster's) — or, for a ``sync`` task, run here and now; return its id."""
        self.pm.hook.qhive_pre_enqueue(task=task)
        if task.get("sync"):
            self.run_sync(task)
        else:
            self.pm.hook.qhive_enqueue(task=task, broker=broker or self.broker, codec=self.codec)
        return task["id"]

    def run_sync(self, task: dict[str, Any]) -> tuple[TaskResult, BaseException | None]:
        """Run a ``sync`` task in this process, as a worker would receive it: through
        the codec, so what cannot travel fails here too."""
        task = self.codec.decode(self.codec.encode(task))
        task.setdefault("cluster", self.config.cluster_name)
        return self.run_here(task)

    # -- execute
    def execute(self, task: dict[str, Any]) -> tuple[TaskResult, BaseException | None]:
        """Run one decoded task in this process; never raises for the task's errors."""
        self.reporting  # noqa: B018 -- build the reporter hook once
        error: BaseException | None = None
        try:
            func = resolve_func(task["func"])
            self.pm.hook.qhive_pre_execute(func=func, task=task)
            value = self.pm.hook.qhive_execute_task(func=func, task=task)
            success = True
        # A task's sys.exit() or KeyboardInterrupt is the task failing, not the worker.
        except BaseException as exc:
            error, success = exc, False
            value = task_traceback(exc)
            self.pm.hook.qhive_report_error(error=exc, task=task)
        result = self.result_of(task, success, value)
        try:
            self.pm.hook.qhive_post_execute_in_worker(task=task, result=result)
        except Exception:  # the outcome is known; a receiver cannot change it
            logger.exception("post_execute_in_worker hook failed for task %s", task.get("id"))
        return result, error

    def result_of(self, task: dict[str, Any], success: bool, value: Any) -> TaskResult:
        return TaskResult(
            id=task["id"],
            name=task.get("name") or task["id"],
            func=func_name(task["func"]),
            started=task["started"],
            stopped=dt.datetime.now(dt.UTC),
            success=success,
            result=value,
            args=tuple(task.get("args", ())),
            kwargs=dict(task.get("kwargs", {})),
            hook=task.get("hook") if isinstance(task.get("hook"), str) else None,
            group=task.get("group"),
            cluster=task.get("cluster", self.config.cluster_name),
            pinned=bool(task.get("iter_count")),
        )

    def settle(self, done: list[Done]) -> list[TaskResult]:
        """Save a batch of finished tasks, run their follow-ups and hooks, and settle
        their messages.

        A message is acknowledged when its task succeeded, when failures are
        acknowledged (``ack_failures`` / ``ack_failure``), or when its attempts
        (counted by the store across redeliveries, or by the broker) reach
        ``max_attempts``; otherwise the broker delivers it again after ``retry``.
        A task with a retry policy of its own (``max_attempts``, ``retry_on``,
        ``backoff``: :mod:`qhive.task_control`) follows it instead; with a
        ``backoff``, its message is released to come back after the wait.
        A message whose follow-up could not be sent is not acknowledged: it comes
        back, runs again and sends the follow-up then.
        """
        plans = [self._plan_retry(d) for d in done]
        by_store: dict[int, tuple[ResultStore, list[TaskResult]]] = {}
        for d in done:
            store = self.store_for(d.task)
            if self._keep(d.task, d.result, store):
                by_store.setdefault(id(store), (store, []))[1].append(d.result)
        saved = {r.id: r for store, results in by_store.values()
                 for r in store.save_many(results)}
        settled = [saved.get(d.result.id, d.result) for d in done]
        acked = [d.ack_id is not None and (not plan.again if plan else self._should_ack(d, stored))
                 for d, stored, plan in zip(done, settled, plans, strict=True)]
        # Final: this outcome stays (a failure that is not acknowledged comes back).
        redelivers = self.broker.capabilities.receipts
        final = [(d, stored) for d, stored, ack in zip(done, settled, acked, strict=True)
                 if ack or stored.success or d.ack_id is None or not redelivers]
        failed_follow_ups = follow_up(self, final)
        for d, stored in zip(done, settled, strict=True):
            try:
                if stored.success:
                    self.pm.hook.qhive_task_succeeded(result=stored)
                else:
                    self.pm.hook.qhive_task_failed(result=stored, error=d.error)
            except Exception:  # the result is saved: a broken hook must not undo that
                logger.exception("a task_succeeded/task_failed hook failed for task %s",
                                 stored.id)
        acks = [d.ack_id for d, ack in zip(done, acked, strict=True)
                if ack and id(d) not in failed_follow_ups]
        if acks:
            self.broker.acknowledge_many(acks)
        for d, plan in zip(done, plans, strict=True):
            if plan and plan.again and plan.delay is not None:
                self._release_for_retry(d, plan.delay)
        return settled

    def _plan_retry(self, done: Done) -> Retry | None:
        """The task's own retry policy for a failure that can come back (None: the
        cluster's rules); a failure to be tried again says when, in its result."""
        if done.result.success or done.ack_id is None or not self.broker.capabilities.receipts:
            return None
        plan = plan_retry(done.task, done.error, done.deliveries or 1, self.config)
        if plan is not None and plan.again:
            if plan.delay is None:  # back when its receipt runs out, taken about when it started
                at = done.task.get("run_started", time.time()) + self.config.retry
            else:
                at = time.time() + plan.delay
            done.result.next_attempt = dt.datetime.fromtimestamp(at, dt.UTC)
        return plan

    def _release_for_retry(self, done: Done, delay: float) -> None:
        try:
            self.broker.release(done.ack_id, delay=delay)
        except Exception as exc:  # still in flight: it comes back after 'retry' instead
            logger.warning("could not schedule the next attempt of task %s in %.1f s (%s); "
                           "it comes back after 'retry' (%s s)", done.task.get("id"), delay,
                           exc, self.config.retry)

    def _keep(self, task: dict[str, Any], result: TaskResult, store: ResultStore) -> bool:
        # A store whose results expire on their own (the cache of ``cached``) keeps
        # everything, whatever ``save`` says: Django Q2 writes the cache regardless.
        if not store.applies_save_limit:
            return True
        keeps = self.config.save_limit >= 0
        return not result.success or result.pinned or task.get("save", keeps)

    def _should_ack(self, done: Done, stored: TaskResult) -> bool:
        if stored.success or done.task.get("ack_failure", self.config.ack_failures):
            return True
        limit = self.config.max_attempts
        attempts = max(stored.attempt_count, done.deliveries or 0)
        return bool(limit) and attempts >= limit

    def decode(self, message: Message) -> dict[str, Any] | None:
        """The task in ``message``, or None after failing a package that does not
        verify, cannot be decoded or is not a task (:func:`qhive.task.check_package`)."""
        try:
            task = check_package(self.codec.decode(message.payload))
        except (BadSignature, SerializationError) as exc:
            logger.error("rejected message %s from queue %r: %s", message.ack_id,
                         self.config.queue, exc)
            self.broker.fail(message.ack_id)
            return None
        task.setdefault("cluster", self.config.cluster_name)
        return task

    def run_here(
        self, task: dict[str, Any], message: Message | None = None
    ) -> tuple[TaskResult, BaseException | None]:
        """Every step of a decoded task in this process: run, save, settle, post_execute.

        ``sync=True`` tasks and :meth:`drain` use it; the cluster spreads the same
        steps over its workers and monitor.
        """
        result, error = self.execute(task)
        done = Done(task, result, message and message.ack_id, message and message.deliveries,
                    error)
        [stored] = self.settle([done])
        self.pm.hook.qhive_post_execute(task=task, result=stored)
        return stored, error

    def process(self, message: Message) -> TaskResult | None:
        task = self.decode(message)
        return None if task is None else self.run_here(task, message)[0]

    def drain(self, timeout: float = 0.0) -> list[TaskResult]:
        """Process messages in this process until the queue is empty."""
        done = []
        while messages := self.broker.dequeue(count=self.config.bulk, timeout=timeout):
            done.extend(r for m in messages if (r := self.process(m)) is not None)
        return done


def task_traceback(exc: BaseException) -> str:
    """The error text of a failed task: its traceback from the task's own first frame,
    not the hooks that called it (the call itself stays when the task was called
    wrongly). All of it when the task was never called: the error is qhive's or a
    plugin's (a missing task function, a failing ``pre_execute``)."""
    start = first_task_frame(exc.__traceback__)
    return "".join(traceback.format_exception(type(exc), exc, start)).strip()
