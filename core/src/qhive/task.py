"""Task packages: the dict that travels from ``async_task`` to a worker.

Also what the pipeline needs to build follow-up tasks by itself (the next link
of a chain, the parts of an ``async_iter``): the option keywords of
``async_task``, chain links, and ids derived from other ids.
"""

from __future__ import annotations

import datetime as dt
import importlib
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from qhive.config.checks import is_number
from qhive.errors import BadPackage, TaskFunctionNotFound, did_you_mean
from qhive.naming import humanize
from qhive.task_control import CONTROL_KEYS, prepare


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


#: Keywords of ``async_task`` that are options, never arguments of the task
#: function (unless given in ``q_options``).
OPTION_KEYS = (
    "hook", "group", "save", "sync", "cached", "ack_failure", "iter_count", "iter_cached",
    "chain", "broker", "cluster", "timeout", "task_name", *CONTROL_KEYS,
)

#: Namespace of the ids qhive derives from other ids (chain links, iter parts).
_DERIVED = uuid.UUID("6b1f3c52-8f0e-4d5e-9a57-0f7d2b3c9e11")


def split_options(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(options, function kwargs)`` by Django Q2's rule: an option named in a
    non-empty ``q_options`` comes from there and a same-named keyword stays the
    function's; every other option keyword is taken out of ``kwargs``."""
    kwargs = dict(kwargs)
    q_options = kwargs.pop("q_options", None) or {}
    if not isinstance(q_options, Mapping):
        raise TypeError(f"q_options must be a dict of options, got {q_options!r}")
    unknown = [key for key in q_options if key not in OPTION_KEYS]
    if unknown:
        raise TypeError(f"unknown q_options key {unknown[0]!r}"
                        + (did_you_mean(unknown[0], OPTION_KEYS)
                           or f"; options are: {', '.join(OPTION_KEYS)}"))
    options = {}
    for key in OPTION_KEYS:
        if key in q_options:
            options[key] = q_options[key]
        elif key in kwargs:
            options[key] = kwargs.pop(key)
    return options, kwargs


def chain_link(item: Any) -> dict[str, Any]:
    """One element of ``async_chain``'s list — ``func``, ``(func,)``, ``(func, args)``
    or ``(func, args, kwargs)`` — as the plain dict that travels in the package.

    ``kwargs`` may hold ``async_task`` options (``q_options`` too); ``cluster``
    routes that link. ``group``, ``cached`` and ``sync`` belong to the whole chain.
    """
    if callable(item) or isinstance(item, str):
        item = (item,)
    if not isinstance(item, (tuple, list)) or not 1 <= len(item) <= 3:
        raise TypeError(f"a chain link is func, (func,), (func, args) or (func, args, kwargs); "
                        f"got {item!r}")
    func, args, kwargs = (*item, *((), {})[len(item) - 1 :])
    if not (callable(func) or (isinstance(func, str) and func)):
        raise TypeError(f"a chain link needs a callable or a dotted path, got {func!r}")
    if not isinstance(args, (tuple, list)):
        args = (args,)
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"the kwargs of chain link {func_name(func)!r} must be a dict, "
                        f"got {kwargs!r}")
    options, kwargs = split_options(kwargs)
    for key in ("group", "cached", "sync", "chain", "broker", "iter_count", "iter_cached"):
        if options.pop(key, None) is not None:
            raise TypeError(f"chain link {func_name(func)!r}: {key!r} is set for the whole "
                            f"chain (async_chain's arguments), not per link")
    if callable(options.get("hook")):
        options["hook"] = func_ref(options["hook"])
    # Control options travel as plain values, checked now; a link's countdown stays
    # relative: it counts from when the link is sent.
    countdown = options.pop("countdown", None)
    prepare(options, None)
    if countdown is not None:
        prepare({"countdown": countdown}, None)
        options["countdown"] = countdown
    return {"func": func_ref(func), "args": tuple(args), "kwargs": kwargs, "options": options}


def derived_id(parent: str, what: str) -> str:
    """A task id made from another one: the same inputs give the same id, so a
    follow-up enqueued twice (its parent was redelivered) still has one result."""
    return uuid.uuid5(_DERIVED, f"{parent}:{what}").hex


def check_options(options: Mapping[str, Any]) -> None:
    """Reject option values a worker could not use, at enqueue time.

    :raises ValueError: a ``timeout`` that is not a number of seconds > 0 (``None`` is
        "no timeout"), or a ``cached`` / ``iter_cached`` that is not True or seconds > 0.
    :raises TypeError: a ``hook`` that is neither a callable nor a dotted path.
    """
    timeout = options.get("timeout")
    if timeout is not None and not (is_number(timeout) and timeout > 0):
        raise ValueError(f"async_task(timeout=...) must be a number of seconds > 0 or None, "
                         f"got {timeout!r}")
    hook = options.get("hook")
    if hook is not None and not (callable(hook) or isinstance(hook, str)):
        raise TypeError(f"async_task(hook=...) must be a callable or a dotted path, got {hook!r}")
    for key in ("cached", "iter_cached"):
        value = options.get(key)
        if value is not None and not (value is True or (type(value) is int and value > 0)):
            raise ValueError(f"async_task({key}=...) must be True, False or a number of "
                             f"seconds > 0, got {value!r}")


def new_task(
    func: Callable[..., Any] | str,
    args: tuple = (),
    kwargs: dict[str, Any] | None = None,
    *,
    task_name: str | None = None,
    task_id: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Build a task package. ``options`` (hook, group, timeout, ...) ride along as
    given: ``timeout=None`` means no timeout, whatever the cluster's default."""
    task_id = task_id or uuid.uuid4().hex
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


#: What each key of a task package must hold, checked before a worker sees it.
_PACKAGE_SHAPE: dict[str, tuple[Callable[[Any], bool], str]] = {
    "id": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "func": (lambda v: callable(v) or (isinstance(v, str) and bool(v)),
             "a dotted path or a callable"),
    "args": (lambda v: isinstance(v, tuple | list), "a tuple or list"),
    "kwargs": (lambda v: isinstance(v, Mapping) and all(isinstance(k, str) for k in v),
               "a dict with string keys"),
    "started": (lambda v: isinstance(v, dt.datetime), "a datetime"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "group": (lambda v: v is None or isinstance(v, str), "a string"),
    "timeout": (lambda v: v is None or (is_number(v) and v > 0), "a number > 0 or None"),
    "chain": (lambda v: v is None or (isinstance(v, list | tuple)
                                      and all(isinstance(link, Mapping) for link in v)),
              "a list of chain links"),
    "iter_count": (lambda v: v is None or (isinstance(v, int) and v > 0), "an int > 0"),
    "eta": (lambda v: v is None or (isinstance(v, dt.datetime) and v.tzinfo is not None),
            "an aware datetime"),
    "priority": (lambda v: type(v) is int, "an int"),
    "max_attempts": (lambda v: type(v) is int and v >= 0, "an int >= 0"),
    "retry_on": (lambda v: isinstance(v, list | tuple) and all(isinstance(n, str) for n in v),
                 "a list of class names"),
    "backoff": (lambda v: isinstance(v, Mapping), "a dict"),
}
_REQUIRED = ("id", "func", "args", "kwargs", "started")


def check_package(task: Any) -> dict[str, Any]:
    """``task`` if it has the shape of a task package, else :class:`BadPackage`
    naming what is wrong. A signed package can still be malformed (a bug in a
    producer, an old qhive): it must be refused before a worker runs it."""
    if not isinstance(task, dict):
        raise BadPackage(f"the package holds a {type(task).__name__}, not a task dict")
    missing = [key for key in _REQUIRED if key not in task]
    if missing:
        raise BadPackage(f"the task package has no {', '.join(map(repr, missing))}")
    for key, (valid, expected) in _PACKAGE_SHAPE.items():
        if key in task and not valid(task[key]):
            raise BadPackage(f"the task package's {key!r} must be {expected}, "
                             f"got {type(task[key]).__name__}")
    return task
