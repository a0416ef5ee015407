"""qhive_django's pluggy hooks: Django signals, the ``hook`` task option, the
scheduler thread of a cluster, and database hygiene for long-running processes.

A default plugin of every plugin manager once ``AppConfig.ready()`` ran
(:func:`qhive.plugins.add_default_plugin`), not an entry point: only processes
that run Django have them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import connections
from qhive.config import Config
from qhive.contracts import TaskResult
from qhive.pipeline import Pipeline
from qhive.plugins import hookimpl
from qhive.task import resolve_func

from qhive_django.conf import get_config, get_pipeline
from qhive_django.results import as_task
from qhive_django.signals import (
    SENDER,
    post_execute,
    post_execute_in_worker,
    post_spawn,
    pre_enqueue,
    pre_execute,
)

logger = logging.getLogger("qhive")


def close_old_connections() -> None:
    """Django's ``close_old_connections``, as after a request: drop connections that
    broke or outlived ``CONN_MAX_AGE``. A connection inside a transaction is left
    alone: closing it would break the caller's atomic block (a test case)."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


@hookimpl
def qhive_pre_enqueue(task: dict[str, Any]) -> None:
    pre_enqueue.send(sender=SENDER, task=task)


@hookimpl(tryfirst=True)
def qhive_pre_execute(func: Callable[..., Any], task: dict[str, Any]) -> None:
    # Per task, never per broker call: a task is a unit of work like a request.
    # In sync mode the task runs inside the caller's unit of work: leave it alone.
    if not task.get("sync"):
        close_old_connections()
    pre_execute.send(sender=SENDER, func=func, task=task)


@hookimpl(wrapper=True)
def qhive_execute_task(func: Callable[..., Any], task: dict[str, Any]) -> Any:
    try:
        return (yield)
    finally:
        if not task.get("sync"):
            close_old_connections()


@hookimpl
def qhive_post_execute_in_worker(task: dict[str, Any], result: TaskResult) -> None:
    try:
        func = resolve_func(task["func"])
    except Exception:  # the task failed on it; Django Q2 sends None then
        func = None
    sent = {**task, "result": result.result, "success": result.success, "stopped": result.stopped}
    for receiver, error in post_execute_in_worker.send_robust(sender=SENDER, func=func,
                                                              task=sent, result=result):
        if isinstance(error, Exception):
            logger.error("post_execute_in_worker receiver %r failed on task %s: %r",
                         receiver, task.get("id"), error, exc_info=error)


@hookimpl
def qhive_post_execute(task: dict[str, Any], result: TaskResult) -> None:
    if task.get("hook"):
        call_task_hook(task, result)
    sent = {**task, "result": result.result, "success": result.success, "stopped": result.stopped}
    for receiver, error in post_execute.send_robust(sender=SENDER, task=sent, result=result):
        if isinstance(error, Exception):
            logger.error("post_execute receiver %r failed on task %s: %r",
                         receiver, task.get("id"), error, exc_info=error)
    # The hook and receivers are a unit of work too (on the cluster's hook thread).
    if not task.get("sync"):
        close_old_connections()


@hookimpl
def qhive_cluster_config(name: str) -> Config:
    # Follow-ups routed to another cluster (a chain link's ``cluster``): ALT_CLUSTERS.
    return get_config(name)


@hookimpl
def qhive_pipeline(cluster: str | None) -> Pipeline:
    return get_pipeline(cluster)  # a bad Q_CLUSTER or unknown cluster: its ConfigError


@hookimpl
def qhive_cluster_started(cluster: Any) -> None:
    # The scheduler uses the models, so it needs Django set up; importing hooks must not.
    from qhive_django import scheduler

    scheduler.start_for(cluster)


@hookimpl
def qhive_cluster_stopping(cluster: Any) -> None:
    from qhive_django import scheduler  # as in qhive_cluster_started

    scheduler.stop_for(cluster)


@hookimpl
def qhive_worker_spawned(name: str) -> None:
    for receiver, error in post_spawn.send_robust(sender=SENDER, proc_name=name):
        if isinstance(error, Exception):
            logger.error("post_spawn receiver %r failed in %s: %r", receiver, name, error,
                         exc_info=error)


def call_task_hook(task: dict[str, Any], result: TaskResult) -> None:
    """Call the task's ``hook`` with the result as the store's record (a ``Task`` row with
    the ORM result store: :func:`qhive_django.results.as_task`). Errors are logged, never
    raised: the result is saved."""
    hook = task["hook"]
    try:
        func = resolve_func(hook)
    except Exception as exc:
        logger.error("malformed return hook %r of task %s (%s): %s", hook, task.get("id"),
                     task.get("name"), exc)
        return
    try:
        func(_saved_task(task, result))
    except (Exception, SystemExit):  # a hook must not take the process down with it
        logger.exception("return hook %r of task %s (%s) failed", hook, task.get("id"),
                         task.get("name"))


def _saved_task(task: dict[str, Any], result: TaskResult) -> Any:
    try:
        return as_task(get_pipeline(task.get("cluster")).result_store, result)
    except Exception:  # e.g. the task came from a cluster these settings do not know
        logger.warning("task %s: the hook gets the result, not the saved row", task.get("id"),
                       exc_info=True)
        return result
