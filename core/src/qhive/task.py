"""Task packages: the dict that travels from ``async_task`` to a worker."""

from __future__ import annotations

import datetime as dt
import importlib
import uuid
from collections.abc import Callable
from typing import Any

from qhive.errors import TaskFunctionNotFound
from qhive.naming import humanize


def func_ref(func: Callable[..., Any] | str) -> Callable[..., Any] | str:
    """A dotted path for a module-level function or method, else ``func`` itself.

    Dotted paths keep packages small and work with every serializer; anything
    else (a bound method, a partial) is left for the serializer to carry.
    """
    if isinstance(func, str):
        return func
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if module and qualname and "<" not in qualname and module != "__main__":
        return f"{module}.{qualname}"
    return func


def func_name(func: Callable[..., Any] | str) -> str:
    """A readable name of a task function, for results and logs."""
    ref = func_ref(func)
    return ref if isinstance(ref, str) else repr(ref)


def resolve_func(ref: Callable[..., Any] | str) -> Callable[..., Any]:
    """Import ``"pkg.module.func"`` or ``"pkg.module.Class.method"`` (or ``"pkg.module:func"``).

    :raises TaskFunctionNotFound: with the path and what was missing.
    """
    if callable(ref):
        return ref
    if not isinstance(ref, str) or not ref:
        raise TaskFunctionNotFound(f"task function {ref!r} is not a callable or a dotted path")
    path = ref.replace(":", ".")
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if module_name == missing or module_name.startswith(missing + "."):
                continue  # try a shorter module path
            raise TaskFunctionNotFound(f"task function {ref!r}: importing failed: {exc}") from exc
        for attr in parts[split:]:
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                raise TaskFunctionNotFound(
                    f"task function {ref!r} does not exist: {type(obj).__name__} "
                    f"{getattr(obj, '__name__', obj)!r} has no attribute {attr!r}"
                ) from None
        if not callable(obj):
            raise TaskFunctionNotFound(f"task function {ref!r} is not callable")
        return obj
    raise TaskFunctionNotFound(f"task function {ref!r} does not exist: no module {parts[0]!r}")


def new_task(
    func: Callable[..., Any] | str,
    args: tuple = (),
    kwargs: dict[str, Any] | None = None,
    *,
    task_name: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Build a task package. ``options`` (hook, group, timeout, ...) ride along as
    given: ``timeout=None`` means no timeout, whatever the cluster's default."""
    task_id = uuid.uuid4().hex
    task = {
        "id": task_id,
        "name": task_name or humanize(task_id),
        "func": func_ref(func),
        "args": tuple(args),
        "kwargs": dict(kwargs or {}),
        "started": dt.datetime.now(dt.UTC),
    }
    task.update(options)
    return task
