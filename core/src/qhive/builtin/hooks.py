"""The core's own hook implementations: ``trylast``, so plugins can wrap them."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from qhive.codec import TaskCodec
from qhive.config import Config
from qhive.contracts import Broker
from qhive.drivers import build_driver, load_driver
from qhive.errors import QhiveError
from qhive.hookspecs import hookimpl


@hookimpl(trylast=True)
def qhive_enqueue(task: dict[str, Any], broker: Broker, codec: TaskCodec) -> str:
    return broker.enqueue(codec.encode(task))


@hookimpl
def qhive_check_config(config: Config) -> list[str] | None:
    """Build the selected broker, as ``qcluster`` will, when its class builds offline
    (:attr:`qhive.contracts.Broker.builds_offline`): a bad option or a missing setting
    is then one line from the checks instead of a cluster that fails to start."""
    try:
        factory = load_driver("broker", config.broker)
    except QhiveError:  # unknown or broken: the checks of the selected drivers say so
        return None
    if not getattr(factory, "builds_offline", False):
        return None
    try:
        broker = build_driver("broker", config.broker, dict(config.broker_options),
                              option_key="broker_options", config=config, queue=config.queue)
    except QhiveError as exc:
        return [str(exc)]
    broker.close()
    return None


@hookimpl(trylast=True)
def qhive_execute_task(func: Callable[..., Any], task: dict[str, Any]) -> Any:
    result = func(*task.get("args", ()), **task.get("kwargs", {}))
    if inspect.isawaitable(result):  # an ``async def`` task
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable
