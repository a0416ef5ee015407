"""SignerContract passes a correct signer and fails broken ones."""

SOURCE = '''
import hashlib
import hmac

import pytest

from qhive.contracts import Signer
from qhive.errors import BadSignature
from qhive_testkit import SignerContract


def _bytes(key):
    return key.encode() if isinstance(key, str) else key


class Hmac(Signer):
    """Correct: data + HMAC-SHA256(key, salt + data)."""

    def _mac(self, key, data):
        return hmac.new(_bytes(key), _bytes(self.salt) + b"|" + data, hashlib.sha256).digest()

    def sign(self, data):
        return data + self._mac(self.key, data)

    def unsign(self, signed):
        data, mac = signed[:-32], signed[-32:]
        if len(signed) >= 32:
            for key in (self.key, *self.fallback_keys):
                if hmac.compare_digest(mac, self._mac(key, data)):
                    return data
        raise BadSignature("signature does not match")


class IgnoresSignature(Hmac):
    """Broken: strips the signature without checking it."""

    def unsign(self, signed):
        if len(signed) < 32:
            raise BadSignature("too short")
        return signed[:-32]


class IgnoresSalt(Hmac):
    def _mac(self, key, data):
        return hmac.new(_bytes(key), data, hashlib.sha256).digest()


class SignsWithFallback(Hmac):
    """Broken: signs with the oldest key still configured."""

    def sign(self, data):
        return data + self._mac((self.key, *self.fallback_keys)[-1], data)


class LeaksKey(Hmac):
    def __repr__(self):
        return f"<LeaksKey key={self.key!r}>"


def factory(cls):
    def make(key, salt="default", fallback_keys=()):
        return cls(key=key, salt=salt, fallback_keys=fallback_keys)
    return make


class TestGood(SignerContract):
    @pytest.fixture
    def make_signer(self):
        return factory(Hmac)


class TestIgnoresSignature(SignerContract):
    @pytest.fixture
    def make_signer(self):
        return factory(IgnoresSignature)


class TestIgnoresSalt(SignerContract):
    @pytest.fixture
    def make_signer(self):
        return factory(IgnoresSalt)


class TestSignsWithFallback(SignerContract):
    @pytest.fixture
    def make_signer(self):
        return factory(SignsWithFallback)


class TestLeaksKey(SignerContract):
    @pytest.fixture
    def make_signer(self):
        return factory(LeaksKey)
'''


def test_signer_contract(run_contract):
    outcomes = run_contract(SOURCE)
    assert outcomes.not_passed("TestGood") == {}
    assert {
        "test_every_flipped_byte_is_rejected",
        "test_flipped_bytes_across_a_long_value_are_rejected",
        "test_truncated_or_extended_values_are_rejected",
        "test_another_key_rejects",
        "test_another_salt_rejects",
        "test_old_key_not_in_fallback_keys_rejects",
    } <= outcomes.failed("TestIgnoresSignature")
    assert outcomes.failed("TestIgnoresSalt") == {
        "test_another_salt_rejects",
        "test_fallback_keys_keep_the_salt",
    }
    assert outcomes.failed("TestSignsWithFallback") == {"test_new_signatures_use_the_current_key"}
    assert outcomes.failed("TestLeaksKey") == {"test_repr_never_shows_a_key"}
