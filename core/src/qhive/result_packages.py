"""One stored result = one signed package of the cluster codec.

The whole :class:`~qhive.contracts.TaskResult` goes into a single package
(``qhive.codec.build_codec``: serializer, then an HMAC signature keyed by the
secret key and salted with the project ``name``), so a stored value is either
entirely what a qhive process wrote or rejected before anything is
deserialized. The package carries a marker field, so a validly signed *task*
package copied into a result key is not mistaken for a result, and reading
checks the id, so a result copied to another id's key is not believed either.

Stores that keep a result as one value (``qhive_store_cache``,
``qhive_store_redis``) use :func:`pack` and :func:`unpack`; every store uses
:func:`storable` so that a value the serializer cannot encode never loses a task.
"""

from __future__ import annotations

import dataclasses
import logging
import reprlib
from typing import TYPE_CHECKING, Any

from qhive.codec import TaskCodec, build_codec
from qhive.contracts import TaskResult
from qhive.errors import ConfigError, UnknownDriverError
from qhive.plugins import get_plugin_manager

if TYPE_CHECKING:
    from qhive.config import Config

logger = logging.getLogger("qhive.results")

#: Marks a package as a stored result (format version 1).
MARKER = "qhive_result"
FIELDS = tuple(f.name for f in dataclasses.fields(TaskResult))

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 200


def codec_for(config: Config, plugin: str) -> TaskCodec:
    """The codec of ``config``; a serializer or signer registered from code
    (``qhive_register_drivers``) is found too. Without a secret key: a
    :class:`~qhive.errors.ConfigError` naming ``plugin``."""
    try:
        return build_codec(config)
    except UnknownDriverError:
        return build_codec(config, get_plugin_manager(config).driver_registry)
    except ConfigError as exc:
        raise ConfigError(f"{plugin}: cannot sign stored results: {exc}", key=exc.key) from exc


def pack(codec: TaskCodec, result: TaskResult) -> tuple[TaskResult, bytes]:
    """``(what is stored, its signed bytes)``. A value the serializer cannot encode
    does not lose the task: such a result value makes it a failure saying why,
    such args or kwargs are stored as the ``repr()`` of each (both logged)."""
    result = dataclasses.replace(result, args=tuple(result.args or ()),
                                 kwargs=dict(result.kwargs or {}))
    try:
        return result, codec.encode(_fields(result))
    except Exception:
        result = storable(codec, result)
        return result, codec.encode(_fields(result))


def storable(codec: TaskCodec, result: TaskResult) -> TaskResult:
    """``result`` with what ``codec``'s serializer cannot encode replaced: a result
    value by a failure saying why, args / kwargs by the ``repr()`` of each (logged).
    For the error path: it serializes each value once more to find the culprit."""
    if (error := _encoding_error(codec, result.result)) is not None:
        outcome = "returned" if result.success else "failed with"
        message = (f"qhive could not store the result of this task: {error} "
                   f"(it {outcome} {safe_repr(result.result)})")
        logger.error("task %s (%s): %s", result.id, result.name, message)
        result = dataclasses.replace(result, success=False, result=message)
    if (error := _encoding_error(codec, result.args)) is not None:
        logger.warning("task %s (%s): args stored as repr(): %s", result.id, result.name, error)
        result = dataclasses.replace(result, args=tuple(safe_repr(a) for a in result.args))
    if (error := _encoding_error(codec, result.kwargs)) is not None:
        logger.warning("task %s (%s): kwargs stored as repr(): %s", result.id, result.name, error)
        result = dataclasses.replace(
            result, kwargs={str(k): safe_repr(v) for k, v in result.kwargs.items()})
    return result


def _encoding_error(codec: TaskCodec, value: Any) -> Exception | None:
    try:
        codec.serializer.dumps(value)
    except Exception as exc:
        return exc
    return None


def unpack(codec: TaskCodec, data: Any, task_id: str) -> TaskResult:
    """The result in ``data`` (verified, then decoded); raises if it is not a
    result package of ``task_id`` signed with this project's key."""
    if not isinstance(data, bytes):
        raise ValueError(f"a stored result is bytes, found {type(data).__name__}")
    fields = codec.decode(data)
    if not isinstance(fields, dict) or fields.get(MARKER) != 1:
        raise ValueError("the signed value is not a qhive result package")
    result = TaskResult(**{name: fields[name] for name in FIELDS if name in fields})
    if result.id != task_id:
        raise ValueError(f"the package holds the result of task {result.id!r}")
    return result


def _fields(result: TaskResult) -> dict[str, Any]:
    return {MARKER: 1, **{name: getattr(result, name) for name in FIELDS}}


def safe_repr(value: Any) -> str:
    """``repr(value)``, shortened, and never raising."""
    try:
        return _short.repr(value)
    except Exception:
        return f"<{type(value).__qualname__} object (repr() failed)>"
