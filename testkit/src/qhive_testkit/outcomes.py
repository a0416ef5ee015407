"""What a cluster did with the tasks a test gave it, for the drain and fault tests of
every broker: the result rows it saved (the ORM result store of the test project, see
:mod:`qhive_testkit.django_project`) and how often each task ran (the lines
:func:`qhive_testkit.tasks.record` appends to a file).

``q`` is the test's ``Q_CLUSTER`` (with ``result_store_options["database"]``).

The checks every broker's cluster tests make: :func:`wait_for_sums` (a drain of
``add`` tasks, each with its one correct result) and, after a fault,
:func:`report` (the tally, printed: see it with ``-s``) and
:func:`assert_one_success_each`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from qhive_testkit.qcluster import wait_until

__all__ = ["assert_one_success_each", "counts", "enqueue_many", "get_broker", "report",
           "rows_of", "runs", "successes", "tasks_of", "wait_for_sums"]


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
    """How often each recorded task ran: its first argument -> executions. A line still
    being written (no newline yet: read while a worker appends it) is not counted yet."""
    if not path.exists():
        return Counter()
    text = path.read_text()
    complete = text[:text.rfind("\n") + 1]
    return Counter(json.loads(line)["values"][0] for line in complete.splitlines())


def counts(path: Path, enqueued: int) -> tuple[int, int, int]:
    """(completed, lost, run twice) of the ``enqueued`` tasks ``record`` wrote to ``path``."""
    ran = runs(path)
    return len(ran), enqueued - len(ran), sum(1 for n in ran.values() if n > 1)


def report(what: str, path: Path, enqueued: int) -> tuple[int, int]:
    """Print ``what: N enqueued, C completed, L lost, T run twice`` of the ``enqueued``
    tasks ``record`` wrote to ``path``; return (lost, run twice)."""
    completed, lost, twice = counts(path, enqueued)
    print(f"\n{what}: {enqueued} enqueued, {completed} completed, {lost} lost, "
          f"{twice} run twice")
    return lost, twice


def assert_one_success_each(q: dict, ids) -> None:
    """Every task of ``ids`` has its successful result, and there is no other result."""
    missing = set(ids) - successes(q)
    assert not missing, f"{len(missing)} of {len(ids)} enqueued tasks have no successful result"
    rows = rows_of(q)
    assert rows == len(ids), f"{rows} results for {len(ids)} tasks: one each, none extra, " \
                             f"none failed"


def wait_for_sums(q: dict, ids: dict[str, tuple], within: float = 300.0) -> None:
    """Wait for a result of each of ``ids`` (``qhive_testkit.tasks.add`` tasks: id -> its
    arguments, as :func:`enqueue_many` returns them), then check each has its one correct
    result: the sum, successful, at the first attempt."""
    wait_until(lambda: rows_of(q) >= len(ids), within=within, what=f"{len(ids)} results")
    found = {t.id: (t.result, t.success, t.attempt_count) for t in tasks_of(q)}
    assert len(found) == len(ids), f"{len(found)} results for {len(ids)} tasks"
    wrong = {i: found.get(i) for i, args in ids.items() if found.get(i) != (sum(args), True, 1)}
    assert not wrong, f"{len(wrong)} tasks without their one correct result, e.g. " \
                      f"{list(wrong.items())[:3]}"
