"""Serializers, the HMAC signer and the task codec that chains them."""

import datetime as dt
import pickle
import zlib

import pytest
from qhive.builtin.serializers import JsonSerializer, PickleSerializer
from qhive.builtin.signers import HmacSigner
from qhive.codec import TaskCodec
from qhive.errors import BadSignature, SerializationError
from qhive_testkit import SerializerContract, SignerContract


class TestPickleSerializerContract(SerializerContract):
    @pytest.fixture
    def make_serializer(self):
        return PickleSerializer


class TestJsonSerializerContract(SerializerContract):
    @pytest.fixture
    def make_serializer(self):
        return JsonSerializer


class TestHmacSignerContract(SignerContract):
    @pytest.fixture
    def make_signer(self):
        return lambda key, salt="default", fallback_keys=(): HmacSigner(
            key=key, salt=salt, fallback_keys=fallback_keys
        )


TASK = {
    "id": "0" * 32,
    "name": "able-acid-aged-also",
    "func": "math.copysign",
    "args": (2, -1.5, "x" * 2000, None, True, [1, {"a": (1, 2)}]),
    "kwargs": {"when": dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC)},
    "started": dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC),
    "group": None,
}


def codec(serializer="pickle", compress=False, key="k1", fallback_keys=(), salt="default"):
    ser = {"pickle": PickleSerializer, "json": JsonSerializer}[serializer]()
    signer = HmacSigner(key=key, salt=salt, fallback_keys=fallback_keys)
    return TaskCodec(ser, signer, serializer_name=serializer, compress=compress)


@pytest.mark.parametrize("serializer", ["pickle", "json"])
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip(serializer, compress):
    c = codec(serializer, compress)
    package = c.encode(TASK)
    assert isinstance(package, bytes)
    assert c.decode(package) == TASK


def test_compression_shrinks_large_packages_and_skips_tiny_ones():
    big_plain = codec(compress=False).encode(TASK)
    big_packed = codec(compress=True).encode(TASK)
    assert len(big_packed) < len(big_plain)
    tiny = {"id": "x"}
    assert len(codec(compress=True).encode(tiny)) == len(codec(compress=False).encode(tiny))
    # the body after the header really is zlib data
    body = big_packed[1 + 32 + 3 + len("pickle"):]
    assert pickle.loads(zlib.decompress(body)) == TASK


class SpySerializer(PickleSerializer):
    def __init__(self):
        self.loaded = 0

    def loads(self, data):
        self.loaded += 1
        return super().loads(data)


@pytest.mark.parametrize("compress", [False, True])
def test_flipped_byte_is_rejected_before_deserialization(compress):
    spy = SpySerializer()
    c = TaskCodec(spy, HmacSigner(key="k"), serializer_name="pickle", compress=compress)
    package = c.encode(TASK)
    assert c.decode(package) == TASK and spy.loaded == 1
    for position in range(0, len(package), 7):
        tampered = bytearray(package)
        tampered[position] ^= 0x01
        with pytest.raises(BadSignature):
            c.decode(bytes(tampered))
    assert spy.loaded == 1  # not one tampered package reached pickle


def test_malicious_pickle_without_the_key_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    c = codec()
    forged = HmacSigner(key="attacker-guess").sign(
        b"Q\x00\x06pickle" + pickle.dumps(Exploit())
    )
    with pytest.raises(BadSignature):
        c.decode(forged)
    assert not marker.exists()


def test_old_key_verifies_when_it_is_a_fallback():
    old = codec(key="old-secret").encode(TASK)
    with pytest.raises(BadSignature):
        codec(key="new-secret").decode(old)
    assert codec(key="new-secret", fallback_keys=["old-secret"]).decode(old) == TASK


def test_cluster_name_is_the_salt():
    package = codec(salt="project-a").encode(TASK)
    with pytest.raises(BadSignature, match=r"salt 'project-b'"):
        codec(salt="project-b").decode(package)


def test_serializer_mismatch_is_named():
    package = codec("json").encode(TASK)
    with pytest.raises(SerializationError, match=r"serialized with 'json'.*uses 'pickle'"):
        codec("pickle").decode(package)


def test_json_refuses_what_it_cannot_carry():
    with pytest.raises(SerializationError, match=r"'object'.*pickle serializer"):
        codec("json").encode({"args": (object(),)})


def test_pickle_error_names_the_problem():
    with pytest.raises(SerializationError, match=r"pickle serializer cannot serialize"):
        codec("pickle").encode({"args": (lambda: 1,)})
