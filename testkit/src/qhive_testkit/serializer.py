"""``SerializerContract``: what every qhive serializer must do.

Subclass it in a test module and supply one fixture, ``make_serializer``: a
callable ``() -> Serializer``::

    class TestMySerializer(SerializerContract):
        @pytest.fixture
        def make_serializer(self):
            return MySerializer
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from qhive.contracts import Serializer
from qhive.errors import SerializationError

from qhive_testkit._util import pickled_copy


def task_envelope() -> dict:
    """A task package as the pipeline builds it, with the value types tasks commonly carry."""
    return {
        "id": "0f8fad5bd9cb469fa16570867728950e",
        "name": "victor-hotel-seven-alpha",
        "func": "math.copysign",
        "args": (1, -2, 3.5, "three", None, True, False, [1, [2, "x"]], {"k": "v", "n": [None]}),
        "kwargs": {"timeout": 30, "flag": True, "nested": {"a": [1, 2], "b": {"c": None}}},
        "started": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC),
        "group": None,
    }


UNICODE = {
    "latin": "héllo wörld",
    "cjk": "日本語のテキスト",
    "emoji": "snake 🐍 and hive 🐝",
    "rtl": "שלום עולם",
    "control": "tab\tnewline\nnul\x00",
}


def _unserializable():
    return {"lambda": lambda: None, "lock": threading.Lock()}


GARBAGE = {
    "empty": b"",
    "binary": b"\x00\xff\xfe\xfd not a payload \x13\x37",
    "ff": b"\xff" * 64,
}


class SerializerContract:
    """The serializer contract suite. Subclass as ``TestXxx``, define ``make_serializer``."""

    @pytest.fixture
    def serializer(self, make_serializer) -> Serializer:
        return make_serializer()

    def test_is_a_serializer(self, serializer):
        assert isinstance(serializer, Serializer), (
            f"{type(serializer).__name__} must subclass Serializer"
        )

    def test_dumps_returns_bytes(self, serializer):
        data = serializer.dumps(task_envelope())
        assert type(data) is bytes, f"dumps() returned {type(data).__name__}, not bytes"

    def test_task_envelope_round_trip(self, serializer):
        envelope = task_envelope()
        got = serializer.loads(serializer.dumps(envelope))
        assert type(got) is dict
        assert type(got["args"]) is tuple, f"args came back as {type(got['args']).__name__}"
        assert got == envelope
        assert got["started"].tzinfo is not None, "datetimes must come back timezone-aware"
        assert got["started"].utcoffset() == envelope["started"].utcoffset()

    @pytest.mark.parametrize("text", UNICODE.values(), ids=UNICODE.keys())
    def test_unicode_round_trip(self, serializer, text):
        envelope = {**task_envelope(), "name": text, "args": (text,), "kwargs": {text: text}}
        assert serializer.loads(serializer.dumps(envelope)) == envelope

    @pytest.mark.parametrize("kind", ["lambda", "lock"])
    def test_unserializable_value_raises_serialization_error(self, serializer, kind):
        value = _unserializable()[kind]
        envelope = {**task_envelope(), "args": (1, value)}
        with pytest.raises(SerializationError) as caught:
            serializer.dumps(envelope)
        assert type(value).__name__ in str(caught.value), (
            f"the error must name the type {type(value).__name__!r}: {caught.value}"
        )

    @pytest.mark.parametrize("data", GARBAGE.values(), ids=GARBAGE.keys())
    def test_loads_of_garbage_raises_serialization_error(self, serializer, data):
        with pytest.raises(SerializationError):
            serializer.loads(data)

    def test_loads_of_truncated_data_raises_serialization_error(self, serializer):
        data = serializer.dumps(task_envelope())
        with pytest.raises(SerializationError):
            serializer.loads(data[: len(data) // 2])

    def test_serializer_pickles(self, serializer):
        copy = pickled_copy(serializer, "serializer")
        assert copy.loads(serializer.dumps(task_envelope())) == task_envelope()
