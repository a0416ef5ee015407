"""Every hook qhive calls, in one module.

Implement them in a plugin with :data:`qhive.plugins.hookimpl`::

    from qhive.plugins import hookimpl

    @hookimpl
    def qhive_task_failed(result, error):
        alert_on_call(result.func, result.result)

A module or object is a plugin when it is registered with the plugin manager:
hook-only packages declare it under the ``qhive.plugins`` entry-point group;
a selected broker, result store or reporter instance is registered too, so
drivers may implement hooks as methods. Argument names are part of the
contract; an implementation may take any subset of them.

Hooks marked *firstresult* stop at the first non-``None`` answer. For the
``enqueue`` and ``execute`` hooks the core's own implementation is ``trylast``
and does the work; plugins wrap it with ``@hookimpl(wrapper=True)``, the way
pytest plugins wrap ``pytest_pyfunc_call``.

Each hook's docstring has a line ``Runs in:`` naming the process (and thread)
its implementations run in: the caller, a worker, or a thread of the sentinel.
That is what tells a plugin author what may block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    from qhive.codec import TaskCodec
    from qhive.config import Config
    from qhive.contracts import Broker, ResultStore, TaskResult
    from qhive.drivers import DriverRegistry
    from qhive.pipeline import Pipeline

hookspec = pluggy.HookspecMarker("qhive")
#: mark hook implementations with ``@hookimpl`` (also importable from :mod:`qhive.plugins`)
hookimpl = pluggy.HookimplMarker("qhive")


# --------------------------------------------------------------------------- set-up


@hookspec
def qhive_register_drivers(registry: DriverRegistry) -> None:
    """Register brokers, result stores, serializers, signers or reporters from code.

    For project-local backends that are not packaged, and for tests. Drivers
    registered here win over entry points of the same name::

        @hookimpl
        def qhive_register_drivers(registry):
            registry.add("broker", "mine", MyBroker)

    Runs in: every process that builds a driver (the caller, the sentinel, each
    worker, ``qplugins check``), once per plugin manager, at the first one.

    :param registry: call ``registry.add(kind, name, factory)``; ``kind`` is one of
        ``broker``, ``result_store``, ``serializer``, ``signer``, ``reporter``.
    """


@hookspec(historic=True)
def qhive_configure(config: Config) -> None:
    """Called once per process with the parsed config, before any task runs.

    Historic: a plugin registered later (a selected driver) is called at once.

    Runs in: every process that builds a pipeline (the caller, the sentinel, each
    worker), as it builds it.

    :param config: the cluster's :class:`qhive.config.Config`.
    """


@hookspec
def qhive_check_config(config: Config) -> list[str] | None:
    """Validate settings a plugin owns.

    Feeds ``qplugins check`` and the Django system checks.

    Runs in: the process running the checks (``qplugins check``, or Django's system
    checks such as ``manage.py check``).

    :param config: the parsed config.
    :return: a list of problems, each a sentence naming the setting; ``None`` or
        an empty list when all is well.
    """


@hookspec(firstresult=True)
def qhive_cluster_config(name: str, config: Config) -> Config | None:
    """The config of another cluster of the project, to send it a task.

    The pipeline asks when a follow-up task (the next link of a chain) is
    routed to a cluster other than its own with the ``cluster`` option. The
    Django integration answers from ``Q_CLUSTER["ALT_CLUSTERS"]``.

    Runs in: the worker that ran the task (the sentinel's monitor thread for a task
    whose worker died) as it sends the next link of a chain (the caller, for ``sync``
    tasks).

    :param name: the cluster wanted (a key of ``ALT_CLUSTERS`` or the root's name).
    :param config: the config of the asking pipeline.
    :return: that cluster's :class:`qhive.config.Config`, or ``None`` if this
        plugin does not know it. *firstresult*.
    """


# --------------------------------------------------------------------------- enqueue


@hookspec
def qhive_pre_enqueue(task: dict[str, Any]) -> None:
    """A task is about to be signed and sent (Django's ``pre_enqueue`` signal).

    Runs in: the caller (the process that enqueues; for schedules, the scheduler
    thread of a cluster; for the next link of a chain, the worker that ran the task).
    Implementations may change ``task`` in place.

    :param task: the task package: ``id``, ``name``, ``func``, ``args``,
        ``kwargs`` and the options given to ``async_task``.
    """


@hookspec(firstresult=True)
def qhive_enqueue(task: dict[str, Any], broker: Broker, codec: TaskCodec) -> str | None:
    """Encode ``task`` and put it on ``broker``.

    The core's ``trylast`` implementation does ``broker.enqueue(codec.encode(task))``.
    Wrap it to add tracing, routing or outbox behaviour.

    Runs in: the caller (the process that enqueues; for schedules, the scheduler
    thread of a cluster; for the next link of a chain, the worker that ran the task).

    :param task: the task package, after ``qhive_pre_enqueue``.
    :param broker: the broker of the task's cluster.
    :param codec: serializes, compresses and signs the package.
    :return: the broker's message id. *firstresult*.
    """


# --------------------------------------------------------------------------- execute


@hookspec
def qhive_pre_execute(func: Callable[..., Any], task: dict[str, Any]) -> None:
    """A worker is about to run ``func`` for ``task`` (Django's ``pre_execute`` signal).

    Runs in: the worker process, before the task's function is called (the caller,
    for ``sync`` tasks).

    :param func: the resolved task function.
    :param task: the decoded task package.
    """


@hookspec(firstresult=True)
def qhive_execute_task(func: Callable[..., Any], task: dict[str, Any]) -> Any:
    """Run the task function and return its result.

    The core's ``trylast`` implementation calls ``func(*task["args"], **task["kwargs"])``
    and runs coroutines of ``async def`` functions to completion. Exceptions
    propagate and become a failed result.

    Runs in: the worker process (the caller, for ``sync`` tasks).

    :param func: the resolved task function.
    :param task: the decoded task package (``args``, ``kwargs``, options).
    :return: the task's return value. *firstresult*; note that a wrapper sees a
        task returning ``None`` as ``None``.
    """


@hookspec
def qhive_post_execute_in_worker(task: dict[str, Any], result: TaskResult) -> None:
    """A task ran and its result is about to leave the worker (Django's
    ``post_execute_in_worker`` signal).

    Runs in: the worker (or the caller, for ``sync`` tasks), before the result is
    saved. A failure here is logged and does not change the task's outcome.

    :param task: the decoded task package.
    :param result: the outcome: ``result.success``, and ``result.result`` the return
        value or the error text.
    """


@hookspec
def qhive_task_succeeded(result: TaskResult) -> None:
    """A task finished and its result was handed to the result store.

    Runs in: the worker that ran the task, after its batch of results was saved and
    before their messages are acknowledged (the caller, for ``sync`` tasks): a slow
    implementation holds up the worker.

    :param result: what the store keeps; ``result.result`` is the return value.
    """


@hookspec
def qhive_task_failed(result: TaskResult, error: BaseException | None) -> None:
    """A task failed: it raised, timed out, or its worker died.

    Runs in: the worker that ran the task, after its batch of results was saved and
    before their messages are acknowledged — or, for a task whose worker died or timed
    out, the sentinel's monitor thread (the caller, for ``sync`` tasks): a slow
    implementation holds up the worker.

    :param result: the failure as stored; ``result.result`` is the error text.
    :param error: the exception when it was raised in this process, else ``None``
        (a timeout or a killed worker is known only by its text).
    """


@hookspec
def qhive_post_execute(task: dict[str, Any], result: TaskResult) -> None:
    """After a result was saved and the message acknowledged (Django's ``post_execute``).

    Runs in: the worker that ran the task, after its batch was saved and acknowledged,
    one result at a time — or, for a task whose worker died or timed out, the
    sentinel's hook thread (the caller, for ``sync`` tasks). A plugin that counts
    across the cluster's processes keeps its counts where every process reaches them
    (the Prometheus plugin: ``prometheus_client``'s multiprocess mode).

    :param task: the task package.
    :param result: the saved result.
    """


@hookspec
def qhive_report_error(error: BaseException, task: dict[str, Any] | None) -> None:
    """Report a task's error to people (Sentry, Rollbar, logs).

    Every configured reporter receives it (``error_reporter`` in ``Q_CLUSTER``);
    plugins may add their own destinations. Implementations must not raise.

    Runs in: the worker process, as the task's exception is caught (the caller, for
    ``sync`` tasks). A timeout or a dead worker is not reported here.

    :param error: the exception the task raised.
    :param task: the task package, or ``None`` outside a task.
    """


# --------------------------------------------------------------------------- cluster


@hookspec
def qhive_cluster_starting(cluster: Any) -> None:
    """A cluster is about to start its workers: what they should inherit from the
    sentinel (an environment variable, a directory) is set up here.

    Runs in: the sentinel (cluster main process), on the thread that runs the
    cluster, before any worker starts.

    :param cluster: the cluster (its ``name``, ``config``, ``pid``).
    """


@hookspec
def qhive_cluster_started(cluster: Any) -> None:
    """A cluster has spawned its workers and is taking tasks.

    Runs in: the sentinel (cluster main process), on the thread that runs the
    cluster, once its workers and monitor started.

    :param cluster: the running cluster (its ``name``, ``config``, ``pid``).
    """


@hookspec
def qhive_cluster_stopping(cluster: Any) -> None:
    """A cluster begins its stop procedure; close what you opened.

    Runs in: the sentinel (cluster main process), on the thread that runs the
    cluster, as the stop begins: before workers stop taking tasks and running tasks
    finish.

    :param cluster: the stopping cluster.
    """


@hookspec
def qhive_worker_spawned(name: str) -> None:
    """A worker process started (Django's ``post_spawn`` signal).

    Runs in: the worker process, after its set-up and before it takes a task. An
    exception is a failed start: the sentinel logs it and starts another worker
    (``START_FAILURES`` in a row stop the cluster).

    :param name: the worker's process name.
    """


# --------------------------------------------------------------------------- frameworks


@hookspec(firstresult=True)
def qhive_pipeline(cluster: str | None) -> Pipeline | None:
    """The pipeline of ``cluster`` in the framework this process runs (qhive_django
    answers from ``Q_CLUSTER``), so that plugins reach the project's drivers without
    importing the framework: see :func:`qhive.plugins.project_pipeline`.

    Runs in: any process of the project, when a plugin asks for the pipeline.

    :param cluster: a cluster name, or ``None`` for the process's own cluster.
    :return: the :class:`~qhive.pipeline.Pipeline`, or ``None`` to let others answer.
        *firstresult*.
    """


@hookspec(firstresult=True)
def qhive_result_records(
    store: ResultStore, results: list[TaskResult], group: str | None, failures: bool
) -> Any:
    """The records ``store`` keeps for ``results``, in the form a framework's task
    API hands out: Django Q2's ``fetch`` returns ``Task`` rows, its ``fetch_group`` a
    ``QuerySet`` of them. A store whose records are model rows answers for itself; a
    plugin may also answer for other stores (unsaved model instances).

    Runs in: the caller (``fetch``, ``fetch_group``, ``delete_group``, hooks' ``Task``).

    :param store: the result store the results came from.
    :param results: what the store returned, in order (for ``group``: the group's
        results, ``failures`` applied).
    :param group: ``None``: answer with a list, one record per result, in order. A
        group id: answer with a lazy query of that group's records (a ``QuerySet``:
        ``delete_group`` calls its ``delete()`` or ``update(group=None)``), or ``None``.
    :param failures: for ``group``: whether failed tasks are included.
    :return: the records, or ``None`` to let others answer (the caller then uses the
        :class:`~qhive.contracts.TaskResult` objects themselves). *firstresult*.
    """
