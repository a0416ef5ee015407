"""Results as Django Q2's task API hands them out: the result store's own records
(``Task`` rows with the ORM result store) where a plugin offers them through the
``qhive_result_records`` hook, else the :class:`~qhive.contracts.TaskResult` itself.

The Django app never asks which store it has: a store whose results are model rows
answers the hook (qhive_store_orm does, and also turns other stores' results into
unsaved ``Task`` instances while its app is installed).
"""

from __future__ import annotations

from typing import Any

from qhive.contracts import ResultStore, TaskResult
from qhive.plugins import get_plugin_manager


def records(store: ResultStore, found: list[TaskResult]) -> list[Any]:
    """One record per result of ``found``, in order."""
    answer = get_plugin_manager().hook.qhive_result_records(
        store=store, results=found, group=None, failures=True)
    return list(found) if answer is None else answer


def as_task(store: ResultStore, found: TaskResult) -> Any:
    """``found`` as its record (see :func:`records`)."""
    return records(store, [found])[0]


def group_records(store: ResultStore, group: str, found: list[TaskResult],
                  failures: bool) -> Any | None:
    """A lazy query of the group's records (Django Q2: a ``QuerySet`` of ``Task`` rows),
    or None when the store offers none."""
    return get_plugin_manager().hook.qhive_result_records(
        store=store, results=found, group=group, failures=failures)
