"""What runs now: a task's state while it runs, and the progress it reports.

The sentinel knows which task each of its workers runs, since when, and the
progress the task last reported; it publishes that with its :class:`Stat`
every guard cycle. So the running state costs nothing per task: no broker or
store round trip, for tasks that report progress or not. A task reports with
:func:`qhive.progress.progress`, which goes over its worker's pipe to the sentinel. A worker
that dies takes its task off the list at once (the sentinel records the
failure); a whole cluster that dies drops off when its stat expires.

:func:`task_state` puts the pieces together for a caller: the result store
first (succeeded, failed), then the live clusters' stats (running), else
``queued`` — like Celery's ``PENDING``, that also covers an id no one knows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

from qhive.cluster.stat import Stat

if TYPE_CHECKING:
    from qhive.contracts import TaskResult
    from qhive.pipeline import Pipeline


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class TaskState:
    """A task as a caller sees it now.

    :ivar status: queued, running, succeeded or failed.
    :ivar cluster: the cluster running it (its name), or that saved its result.
    :ivar host: the host it runs on; ``worker`` the worker's pid; ``cluster_id``
        the running cluster's id (as ``qmonitor`` shows it).
    :ivar started: when it began running (aware, UTC); for a finished task, when
        it was enqueued (Django Q's ``started``).
    :ivar progress: the fraction done (0 to 1) it last reported, and ``note`` its text.
    :ivar attempt: the delivery being run (1 for the first), when known.
    :ivar result: the saved result of a finished task.
    """

    id: str
    status: TaskStatus
    name: str | None = None
    func: str | None = None
    cluster: str | None = None
    cluster_id: str | None = None
    host: str | None = None
    worker: int | None = None
    started: dt.datetime | None = None
    progress: float | None = None
    note: str | None = None
    attempt: int | None = None
    result: TaskResult | None = None

    @property
    def running(self) -> bool:
        return self.status is TaskStatus.RUNNING

    @property
    def progress_text(self) -> str:
        """``"40% step 2"``; ``""`` when it reported none."""
        text = "" if self.progress is None else f"{self.progress:.0%}"
        return f"{text} {self.note}".strip() if self.note else text

    @property
    def finished(self) -> bool:
        return self.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


def running_tasks(stats: list[Stat]) -> list[TaskState]:
    """The tasks the clusters of ``stats`` run now, longest running first."""
    tasks = []
    for stat in stats:
        for entry in stat.running:
            try:
                started = entry.get("started")
                tasks.append(TaskState(
                    id=entry["id"], status=TaskStatus.RUNNING, name=entry.get("name"),
                    func=entry.get("func"), cluster=stat.name, cluster_id=stat.cluster_id,
                    host=stat.host, worker=entry.get("worker"),
                    started=None if started is None else dt.datetime.fromtimestamp(started,
                                                                                   dt.UTC),
                    progress=entry.get("progress"), note=entry.get("note"),
                    attempt=entry.get("attempt")))
            except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
                continue  # an entry of another version: leave it out, not break the screen
    never = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(tasks, key=lambda t: t.started or never)


def task_state(pipeline: Pipeline, task_id: str,
               lookup: Callable[[], TaskResult | None] | None = None) -> TaskState:
    """The state of ``task_id`` (an id, or a task name) in ``pipeline``'s project.

    :param lookup: finds its result (default: ``pipeline.result_store.get(task_id)``).
    """
    stats = Stat.store_for(pipeline).get_all()
    # After the stats: a task that ends in between is found here.
    found = lookup() if lookup is not None else pipeline.result_store.get(task_id)
    if found is not None:
        return TaskState(
            id=found.id, status=TaskStatus.SUCCEEDED if found.success else TaskStatus.FAILED,
            name=found.name, func=found.func, cluster=found.cluster, started=found.started,
            attempt=found.attempt_count, result=found)
    for state in running_tasks(stats):
        if task_id in (state.id, state.name):
            return state
    return TaskState(id=task_id, status=TaskStatus.QUEUED)
