"""The core's own hook implementations: ``trylast``, so plugins can wrap them."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from qhive.codec import TaskCodec
from qhive.contracts import Broker
from qhive.hookspecs import hookimpl


@hookimpl(trylast=True)
def qhive_enqueue(task: dict[str, Any], broker: Broker, codec: TaskCodec) -> str:
    return broker.enqueue(codec.encode(task))


@hookimpl(trylast=True)
def qhive_execute_task(func: Callable[..., Any], task: dict[str, Any]) -> Any:
    result = func(*task.get("args", ()), **task.get("kwargs", {}))
    if inspect.isawaitable(result):  # an ``async def`` task
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable
