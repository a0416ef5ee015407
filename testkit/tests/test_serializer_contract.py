"""SerializerContract passes a correct serializer and fails broken ones."""

SOURCE = '''
import json
import pickle

import pytest

from qhive.contracts import Serializer
from qhive.errors import SerializationError
from qhive_testkit import SerializerContract


class Pickle(Serializer):
    """Correct: pickle, with errors that name the offending type."""

    def dumps(self, obj):
        culprit = []

        class Pickler(pickle.Pickler):
            def reducer_override(self, value):
                culprit[:] = [value]
                return NotImplemented

        import io
        buffer = io.BytesIO()
        try:
            Pickler(buffer).dump(obj)
        except Exception as exc:
            name = type(culprit[0]).__name__ if culprit else type(obj).__name__
            raise SerializationError(f"cannot serialize {name}: {exc}") from exc
        return buffer.getvalue()

    def loads(self, data):
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise SerializationError(f"cannot deserialize: {exc}") from exc


class TuplesBecomeLists(Pickle):
    """Broken: a JSON round trip turns the args tuple into a list."""

    def loads(self, data):
        obj = super().loads(data)
        return json.loads(json.dumps(obj, default=str)) if isinstance(obj, dict) else obj


class RawErrors(Serializer):
    """Broken: lets pickle's own exceptions escape."""

    dumps = staticmethod(pickle.dumps)
    loads = staticmethod(pickle.loads)


class TestGood(SerializerContract):
    @pytest.fixture
    def make_serializer(self):
        return Pickle


class TestTuplesBecomeLists(SerializerContract):
    @pytest.fixture
    def make_serializer(self):
        return TuplesBecomeLists


class TestRawErrors(SerializerContract):
    @pytest.fixture
    def make_serializer(self):
        return RawErrors
'''


def test_serializer_contract(run_contract):
    outcomes = run_contract(SOURCE)
    assert outcomes.not_passed("TestGood") == {}
    assert outcomes.failed("TestTuplesBecomeLists") == {
        "test_task_envelope_round_trip",
        "test_serializer_pickles",
        *(f"test_unicode_round_trip[{k}]" for k in ("latin", "cjk", "emoji", "rtl", "control")),
    }
    assert outcomes.failed("TestRawErrors") == {
        "test_unserializable_value_raises_serialization_error[lambda]",
        "test_unserializable_value_raises_serialization_error[lock]",
        "test_loads_of_garbage_raises_serialization_error[empty]",
        "test_loads_of_garbage_raises_serialization_error[binary]",
        "test_loads_of_garbage_raises_serialization_error[ff]",
        "test_loads_of_truncated_data_raises_serialization_error",
    }
