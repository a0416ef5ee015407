"""The ORM result store's hooks: results as ``Task`` rows, the records Django Q2's
task API hands out (``fetch`` → a ``Task``, ``fetch_group`` → a ``QuerySet``).

A default plugin of every plugin manager once the app is ready
(:meth:`qhive_store_orm.apps.QhiveStoreOrmConfig.ready`): only Django processes with
this app installed have a ``Task`` model to answer with.
"""

from __future__ import annotations

from typing import Any

from qhive.contracts import ResultStore, TaskResult
from qhive.hookspecs import hookimpl

from qhive_store_orm.models import Task
from qhive_store_orm.store import OrmResultStore


@hookimpl
def qhive_result_records(store: ResultStore, results: list[TaskResult], group: str | None,
                         failures: bool) -> Any:
    if not isinstance(store, OrmResultStore):
        # Another store's results as unsaved rows (``save()`` keeps one), as code written
        # for Django Q2 expects a ``Task``; no query for a group of them.
        return None if group is not None else [Task.from_result(r) for r in results]
    if group is not None:
        rows = Task.objects.using(store.alias).filter(group=group)
        return rows if failures else rows.filter(success=True)
    return [Task.from_result(r, database=store.alias) for r in results]  # the rows, as read
