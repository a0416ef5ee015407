"""``SignerContract``: what every qhive signer must do.

Subclass it in a test module and supply one fixture, ``make_signer``: a callable
``(key, salt="default", fallback_keys=()) -> Signer``::

    class TestMySigner(SignerContract):
        @pytest.fixture
        def make_signer(self):
            def make(key, salt="default", fallback_keys=()):
                return MySigner(key=key, salt=salt, fallback_keys=fallback_keys)
            return make
"""

from __future__ import annotations

import random

import pytest
from qhive.contracts import Signer
from qhive.errors import BadSignature

from qhive_testkit._util import BINARY, ONE_MIB, assert_same_bytes, pickled_copy

KEY = "contract-current-key-5d41402abc4b2a76"
OLD_KEY = "contract-old-key-7d793037a0760186"
OTHER_KEY = "contract-other-key-e4da3b7fbbce2345"
SHORT = b"a short task package \x00\xff"
LONG = ONE_MIB[: 256 * 1024]


def assert_rejected(signer: Signer, signed: bytes, why: str) -> None:
    """``signer.unsign(signed)`` must raise BadSignature, and nothing else."""
    try:
        signer.unsign(signed)
    except BadSignature:
        return
    except Exception as exc:
        pytest.fail(f"{why}: raised {type(exc).__name__}({exc}) instead of BadSignature")
    pytest.fail(f"{why}: unsign() accepted it")


def flipped(signed: bytes, position: int, mask: int) -> bytes:
    tampered = bytearray(signed)
    tampered[position] ^= mask
    return bytes(tampered)


class SignerContract:
    """The signer contract suite. Subclass as ``TestXxx``, define ``make_signer``."""

    @pytest.fixture
    def signer(self, make_signer) -> Signer:
        return make_signer(KEY)

    def test_is_a_signer(self, signer):
        assert isinstance(signer, Signer), f"{type(signer).__name__} must subclass Signer"

    @pytest.mark.parametrize("data", [b"", SHORT], ids=["empty", "short"])
    def test_sign_returns_other_bytes(self, signer, data):
        signed = signer.sign(data)
        assert type(signed) is bytes, f"sign() returned {type(signed).__name__}, not bytes"
        assert signed != data, "sign() returned the data unchanged"

    @pytest.mark.parametrize(
        "data", [b"", SHORT, BINARY, ONE_MIB], ids=["empty", "short", "binary", "1MiB"]
    )
    def test_round_trip(self, signer, data):
        got = signer.unsign(signer.sign(data))
        assert_same_bytes(got, data, "unsign(sign(data))")

    def test_str_and_bytes_keys(self, make_signer):
        for key in (KEY, KEY.encode()):
            signer = make_signer(key)
            assert signer.unsign(signer.sign(SHORT)) == SHORT

    def test_empty_key_is_refused(self, make_signer):
        with pytest.raises(ValueError):
            make_signer("")

    # -- tampering

    def test_every_flipped_byte_is_rejected(self, signer):
        signed = signer.sign(SHORT)
        for position in range(len(signed)):
            for mask in (0x01, 0x80):
                assert_rejected(
                    signer,
                    flipped(signed, position, mask),
                    f"byte {position} of {len(signed)} flipped with {mask:#04x}",
                )

    def test_flipped_bytes_across_a_long_value_are_rejected(self, signer):
        signed = signer.sign(LONG)
        size = len(signed)
        sample = set(range(48)) | set(range(size - 48, size))
        sample |= set(random.Random(7).sample(range(size), 64))
        for position in sorted(sample):
            assert_rejected(
                signer, flipped(signed, position, 0x01), f"byte {position} of {size} flipped"
            )

    def test_truncated_or_extended_values_are_rejected(self, signer):
        signed = signer.sign(SHORT)
        cuts = {
            "empty": b"",
            "one byte": signed[:1],
            "half": signed[: len(signed) // 2],
            "last byte cut": signed[:-1],
            "first byte cut": signed[1:],
            "byte appended": signed + b"\x00",
            "signed twice": signed + signed,
        }
        for why, value in cuts.items():
            assert_rejected(signer, value, why)

    def test_unsigned_data_is_rejected(self, signer):
        assert_rejected(signer, SHORT, "data that was never signed")

    # -- keys and salts

    def test_another_key_rejects(self, make_signer):
        signed = make_signer(KEY).sign(SHORT)
        assert_rejected(make_signer(OTHER_KEY), signed, "signed with another key")

    def test_another_salt_rejects(self, make_signer):
        signed = make_signer(KEY, salt="cluster-one").sign(SHORT)
        assert make_signer(KEY, salt="cluster-one").unsign(signed) == SHORT
        assert_rejected(make_signer(KEY, salt="cluster-two"), signed, "signed with another salt")

    def test_old_key_in_fallback_keys_verifies(self, make_signer):
        signed = make_signer(OLD_KEY).sign(SHORT)
        rotated = make_signer(KEY, fallback_keys=[OTHER_KEY, OLD_KEY])
        assert rotated.unsign(signed) == SHORT, "a fallback key must verify old signatures"

    def test_old_key_not_in_fallback_keys_rejects(self, make_signer):
        signed = make_signer(OLD_KEY).sign(SHORT)
        assert_rejected(make_signer(KEY, fallback_keys=[OTHER_KEY]), signed, "unknown old key")

    def test_fallback_keys_keep_the_salt(self, make_signer):
        signed = make_signer(OLD_KEY, salt="cluster-one").sign(SHORT)
        rotated = make_signer(KEY, salt="cluster-two", fallback_keys=[OLD_KEY])
        assert_rejected(rotated, signed, "old key, another salt")

    def test_new_signatures_use_the_current_key(self, make_signer):
        signed = make_signer(KEY, fallback_keys=[OLD_KEY]).sign(SHORT)
        assert make_signer(KEY).unsign(signed) == SHORT
        assert_rejected(make_signer(OLD_KEY), signed, "signed while OLD_KEY was a fallback")

    # -- hygiene

    def test_repr_never_shows_a_key(self, make_signer):
        signer = make_signer(KEY, salt="cluster-one", fallback_keys=[OLD_KEY])
        for text in (repr(signer), str(signer)):
            assert KEY not in text and OLD_KEY not in text, f"a key leaks in {text!r}"

    def test_signer_pickles(self, signer):
        copy = pickled_copy(signer, "signer")
        assert copy.unsign(signer.sign(SHORT)) == SHORT
        assert signer.unsign(copy.sign(SHORT)) == SHORT
