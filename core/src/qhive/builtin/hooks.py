"""The core's own hook implementations: ``trylast``, so plugins can wrap them."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from qhive.codec import TaskCodec
from qhive.config import Config
from qhive.contracts import Broker
from qhive.drivers import PLUGIN_GROUP, build_driver, entry_points, load_driver
from qhive.errors import QhiveError
from qhive.hookspecs import hookimpl
from qhive.task_control import delivery


@hookimpl(trylast=True)
def qhive_enqueue(task: dict[str, Any], broker: Broker, codec: TaskCodec) -> str:
    # a delay or a priority only for a task that has one: any broker takes the plain call
    return broker.enqueue(codec.encode(task), **delivery(task))


@hookimpl
def qhive_check_config(config: Config) -> list[str] | None:
    return [*_check_broker(config), *_check_plugin_options(config)]


def _check_broker(config: Config) -> list[str]:
    """Build the selected broker, as ``qcluster`` will, when its class builds offline
    (:attr:`qhive.contracts.Broker.builds_offline`): a bad option or a missing setting
    is then one line from the checks instead of a cluster that fails to start."""
    try:
        factory = load_driver("broker", config.broker)
    except QhiveError:  # unknown or broken: the checks of the selected drivers say so
        return []
    if not getattr(factory, "builds_offline", False):
        return []
    try:
        broker = build_driver("broker", config.broker, dict(config.broker_options),
                              option_key="broker_options", config=config, queue=config.queue)
    except QhiveError as exc:
        return [str(exc)]
    broker.close()
    return []


def _check_plugin_options(config: Config) -> list[str]:
    """Options under ``plugins`` for a plugin that is not installed would do nothing."""
    installed = {ep.name for ep in entry_points(PLUGIN_GROUP)}
    return [f"Q_CLUSTER['plugins'][{name!r}] holds options of a plugin that is not installed "
            f"(installed hook-only plugins: {', '.join(sorted(installed)) or 'none'}); install "
            f"it (pip install qhive-{name} or the package that provides it) or remove the key"
            for name, value in config.plugins.items()
            if isinstance(value, Mapping) and name not in installed]


@hookimpl(trylast=True)
def qhive_execute_task(func: Callable[..., Any], task: dict[str, Any]) -> Any:
    result = func(*task.get("args", ()), **task.get("kwargs", {}))
    if inspect.isawaitable(result):  # an ``async def`` task
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable
