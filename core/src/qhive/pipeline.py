"""The task pipeline of one process: the selected drivers and the steps a task
goes through, from enqueue to a saved result.

enqueue: task dict -> ``qhive_pre_enqueue`` -> serializer -> zlib? -> signer -> broker
execute: broker -> verify -> decompress -> deserialize -> run -> result store -> hooks -> ack

The cluster runs these steps across processes; :meth:`Pipeline.drain` runs them
in the calling process (the core demo and tests).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import traceback
from collections.abc import Callable
from functools import cached_property
from typing import Any

from qhive.codec import TaskCodec, build_codec
from qhive.config import Config
from qhive.contracts import Broker, Message, Reporter, ResultStore, TaskResult
from qhive.drivers import build_driver
from qhive.errors import BadSignature, SerializationError
from qhive.plugins import QhivePluginManager, get_plugin_manager, hookimpl
from qhive.task import func_name, new_task, resolve_func

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

    @cached_property
    def codec(self) -> TaskCodec:
        return build_codec(self.config, self.pm.driver_registry)

    @cached_property
    def reporters(self) -> list[Reporter]:
        reporters = [
            self._build("reporter", name, options, f"error_reporter.{name}")
            for name, options in self.config.error_reporter.items()
        ]
        dispatch = _ReporterDispatch(reporters)
        self.pm.register(dispatch, name=f"reporters:{id(self)}")
        self._registered.append(dispatch)
        return reporters

    def close(self) -> None:
        for name in ("broker", "result_store"):
            if name in self.__dict__:
                self.__dict__[name].close()
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
        task = new_task(func, args, kwargs, **options)
        self.pm.hook.qhive_pre_enqueue(task=task)
        self.pm.hook.qhive_enqueue(task=task, broker=self.broker, codec=self.codec)
        return task["id"]

    # -- execute
    def execute(self, task: dict[str, Any]) -> tuple[TaskResult, BaseException | None]:
        """Run one decoded task in this process; never raises for the task's errors."""
        self.reporters  # noqa: B018 -- build the reporter hook once
        error: BaseException | None = None
        try:
            func = resolve_func(task["func"])
            self.pm.hook.qhive_pre_execute(func=func, task=task)
            value = self.pm.hook.qhive_execute_task(func=func, task=task)
            success = True
        # A task's sys.exit() or KeyboardInterrupt is the task failing, not the worker.
        except BaseException as exc:
            error, success = exc, False
            value = "".join(traceback.format_exception(exc)).strip()
            self.pm.hook.qhive_report_error(error=exc, task=task)
        return self.result_of(task, success, value), error

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
        )

    def settle(self, done: list[Done]) -> list[TaskResult]:
        """Save a batch of finished tasks, run their hooks and settle their messages.

        A message is acknowledged when its task succeeded, when failures are
        acknowledged (``ack_failures`` / ``ack_failure``), or when its attempts
        (counted by the store across redeliveries, or by the broker) reach
        ``max_attempts``; otherwise the broker delivers it again after ``retry``.
        """
        keep = [d.result for d in done if self._keep(d.task, d.result)]
        saved = {r.id: r for r in self.result_store.save_many(keep)} if keep else {}
        settled, acks = [], []
        for d in done:
            stored = saved.get(d.result.id, d.result)
            if d.result.success:
                self.pm.hook.qhive_task_succeeded(result=stored)
            else:
                self.pm.hook.qhive_task_failed(result=stored, error=d.error)
            if d.ack_id is not None and self._should_ack(d, stored):
                acks.append(d.ack_id)
            settled.append(stored)
        if acks:
            self.broker.acknowledge_many(acks)
        return settled

    def _keep(self, task: dict[str, Any], result: TaskResult) -> bool:
        return not result.success or task.get("save", self.config.save_limit >= 0)

    def _should_ack(self, done: Done, stored: TaskResult) -> bool:
        if stored.success or done.task.get("ack_failure", self.config.ack_failures):
            return True
        limit = self.config.max_attempts
        attempts = max(stored.attempt_count, done.deliveries or 0)
        return bool(limit) and attempts >= limit

    def decode(self, message: Message) -> dict[str, Any] | None:
        """The task in ``message``, or None after failing a package that does not verify."""
        try:
            task = self.codec.decode(message.payload)
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


class _ReporterDispatch:
    """Hands ``qhive_report_error`` to the configured reporters."""

    def __init__(self, reporters: list[Reporter]) -> None:
        self.reporters = reporters

    @hookimpl
    def qhive_report_error(self, error: BaseException, task: dict[str, Any] | None) -> None:
        for reporter in self.reporters:
            try:
                reporter.report(error, task)
            except Exception:  # the contract says never; be safe anyway
                logger.exception("error reporter %r failed", reporter)
