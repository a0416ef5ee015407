"""The two serializers that ship with the core: ``pickle`` (Django Q's default)
and ``json`` (for people who do not want pickle on the wire)."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import pickle
import uuid
from typing import Any

from qhive.contracts import Serializer
from qhive.errors import SerializationError


class PickleSerializer(Serializer):
    """Anything picklable: functions by reference, model instances as snapshots.

    Only ever fed bytes whose signature verified, so unpickling is safe as long
    as the signing key is secret.
    """

    def dumps(self, obj: Any) -> bytes:
        try:
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            culprit = _find_unpicklable(obj)
            raise SerializationError(
                f"pickle serializer cannot serialize a value of type "
                f"{type(culprit).__qualname__!r}: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise SerializationError(f"pickle serializer cannot deserialize: {exc!r}") from exc


class _Tracer(pickle.Pickler):
    """Remembers the last object pickle was asked to reduce."""

    last: Any = None

    def reducer_override(self, obj: Any) -> Any:
        self.last = obj
        return NotImplemented


def _find_unpicklable(obj: Any) -> Any:
    # Only on the error path: tracing every object would slow every dumps().
    tracer = _Tracer(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
    try:
        tracer.dump(obj)
    except Exception:
        return tracer.last
    return obj


# JSON has no tuple, datetime, bytes ... : such values travel as {"__qhive__": tag, "v": ...}.
_TAG = "__qhive__"


def _encode(value: Any) -> Any:
    # Exact type checks: bool is an int, datetime is a date; order matters.
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [_encode(v) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            return {k: _encode(v) for k, v in value.items()}
        return {_TAG: "dict", "v": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, dt.datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {_TAG: "time", "v": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {_TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, decimal.Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, uuid.UUID):
        return {_TAG: "uuid", "v": value.hex}
    if isinstance(value, (bytes, bytearray)):
        return {_TAG: "bytes", "v": bytes(value).hex()}
    if isinstance(value, (set, frozenset)):
        return {_TAG: type(value).__name__, "v": [_encode(v) for v in value]}
    raise SerializationError(
        f"json serializer cannot serialize a value of type {type(value).__qualname__!r}; "
        "pass plain data (str, numbers, lists, dicts, datetimes ...) or use the pickle serializer"
    )


_DECODERS = {
    "tuple": lambda v: tuple(v),
    "dict": lambda v: {k: item for k, item in v},
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "bytes": bytes.fromhex,
    "set": set,
    "frozenset": frozenset,
}


def _decode_object(obj: dict) -> Any:
    tag = obj.get(_TAG)
    if tag is None:
        return obj
    try:
        return _DECODERS[tag](obj["v"])
    except KeyError:
        raise SerializationError(f"json serializer: unknown tag {tag!r}") from None


class JsonSerializer(Serializer):
    """JSON on the wire, with tuples, datetimes, decimals, UUIDs, bytes and sets
    kept as what they were. Functions travel as dotted-path strings."""

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(_encode(obj), separators=(",", ":"), allow_nan=True).encode()

    def loads(self, data: bytes) -> Any:
        try:
            return json.loads(data, object_hook=_decode_object)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"json serializer cannot deserialize: {exc}") from exc
