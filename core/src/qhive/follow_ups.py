"""What a finished task sets off: the next link of its chain, the collation of its
``async_iter``.

Follow-ups happen when a task's outcome is final (see :meth:`Pipeline.settle`),
after its result was saved and before its message is acknowledged, so a crash in
between repeats them; their ids are derived from the task's id, so a repeat adds
no result.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from qhive.contracts import TaskResult
from qhive.naming import humanize
from qhive.task import derived_id, new_task

if TYPE_CHECKING:
    from qhive.pipeline import Done, Pipeline

logger = logging.getLogger("qhive")


def follow_up(pipeline: Pipeline, final: list[tuple[Done, TaskResult]]) -> set[int]:
    """Send the next link of finished chain links and collate finished iters;
    return the ``id()`` of the items whose follow-up failed."""
    failed: set[int] = set()
    iters: dict[str, list[Done]] = defaultdict(list)
    for d, stored in final:
        try:
            if d.task.get("chain"):
                next_link(pipeline, d.task, stored)
        except Exception:
            logger.exception("task %s (%s): could not send the next link of its chain; "
                             "it is not acknowledged and runs again after 'retry'",
                             d.task.get("id"), d.task.get("name"))
            failed.add(id(d))
        if d.task.get("iter_count") and d.task.get("group"):
            iters[d.task["group"]].append(d)
    for group, parts in iters.items():
        try:
            collate(pipeline, group, parts[-1].task)
        except Exception:
            logger.exception("async_iter %s: collating its results failed; its last parts "
                             "are not acknowledged and run again after 'retry'", group)
            failed.update(id(d) for d in parts)
    return failed


def next_link(pipeline: Pipeline, task: dict[str, Any], stored: TaskResult) -> None:
    """Send the chain's next link. It runs whether this link succeeded or failed,
    once this link's outcome is final, in the chain's group (as in Django Q2;
    but also when this link's result was not saved)."""
    link, rest = task["chain"][0], list(task["chain"][1:])
    options = dict(link.get("options", {}))
    target = pipeline.route(options.pop("cluster", None))
    follow = {key: task[key] for key in ("group", "cached", "sync") if task.get(key)}
    if rest:
        follow["chain"] = rest
    nxt = new_task(link["func"], tuple(link.get("args", ())), dict(link.get("kwargs", {})),
                   task_id=derived_id(task["id"], "next"), **options, **follow)
    target.send(nxt)
    logger.debug("chain %s: link %s done, sent %s", task.get("group"), stored.name, nxt["name"])


def collate(pipeline: Pipeline, group: str, task: dict[str, Any]) -> None:
    """When every part of the iter ``group`` has a result, save one result with
    id ``group``: the parts' results in the order of the arguments."""
    parts_store = pipeline.store_for(task)
    iter_cached = task.get("iter_cached")
    target = pipeline.cache_store(iter_cached) if iter_cached else pipeline.result_store
    count = int(task["iter_count"])
    if target.get(group) is not None:  # collated before: these are redeliveries
        parts_store.delete_group(group)
        return
    if parts_store.count_group(group) < count:
        return
    index = {derived_id(group, f"part-{i}"): i for i in range(count)}
    parts = sorted((p for p in parts_store.get_group(group, failures=True) if p.id in index),
                   key=lambda p: index[p.id])
    if len(parts) < count:
        return
    collated = TaskResult(
        id=group, name=humanize(group), func=parts[0].func,
        started=min(p.started for p in parts), stopped=dt.datetime.now(dt.UTC),
        success=all(p.success for p in parts), result=[p.result for p in parts],
        args=tuple(p.args for p in parts), kwargs=dict(parts[0].kwargs),
        cluster=pipeline.config.cluster_name,
    )
    target.save(collated)
    parts_store.delete_group(group)
    logger.info("async_iter %s: collated %d results", group, count)
