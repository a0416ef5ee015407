"""What a cluster did with the tasks a test gave it, for the drain and fault tests of
every broker: the result rows it saved (the ORM result store of the test project, see
:mod:`qhive_testkit.django_project`) and how often each task ran (the lines
:func:`qhive_testkit.tasks.record` appends to a file).

``q`` is the test's ``Q_CLUSTER`` (with ``result_store_options["database"]``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["counts", "enqueue_many", "get_broker", "rows_of", "runs", "successes", "tasks_of"]


def tasks_of(q: dict) -> Any:
    """The ``Task`` rows of the cluster named in ``q``."""
    # Django is the testkit's [django] extra: imported by the Django tests only
    from qhive_store_orm.models import Task

    return Task.objects.using(q["result_store_options"]["database"]).filter(cluster=q["name"])


def successes(q: dict) -> set[str]:
    return set(tasks_of(q).filter(success=True).values_list("id", flat=True))


def rows_of(q: dict) -> int:
    return tasks_of(q).count()


def enqueue_many(func: str, arguments: list[tuple]) -> dict[str, tuple]:
    """``async_task(func, *args)`` for each of ``arguments``: task id -> its arguments."""
    from qhive_django.tasks import async_task  # as tasks_of: the [django] extra

    return {async_task(func, *args): args for args in arguments}


def get_broker() -> Any:
    """The broker of the configured cluster."""
    from qhive_django.conf import get_pipeline  # as tasks_of: the [django] extra

    return get_pipeline().broker


def runs(path: Path) -> Counter:
    """How often each recorded task ran: its first argument -> executions."""
    if not path.exists():
        return Counter()
    return Counter(json.loads(line)["values"][0] for line in path.read_text().splitlines())


def counts(path: Path, enqueued: int) -> tuple[int, int, int]:
    """(completed, lost, run twice) of the ``enqueued`` tasks ``record`` wrote to ``path``."""
    ran = runs(path)
    return len(ran), enqueued - len(ran), sum(1 for n in ran.values() if n > 1)
