"""The default signer: HMAC-SHA256 keyed by a secret, salted with the cluster name."""

from __future__ import annotations

import hashlib
import hmac
from functools import cached_property

from qhive.contracts import Signer
from qhive.errors import BadSignature

_VERSION = b"\x01"
_MAC_SIZE = hashlib.sha256().digest_size


def _derive(key: str | bytes, salt: str) -> bytes:
    # Same idea as Django's salted_hmac: a key per (secret, salt), so a package
    # signed for one cluster name never verifies under another.
    secret = key.encode() if isinstance(key, str) else bytes(key)
    return hashlib.sha256(b"qhive.signer:" + salt.encode() + b":" + secret).digest()


class HmacSigner(Signer):
    """``version byte + HMAC-SHA256(data) + data``.

    Signs with ``key``; verifies with ``key`` or any of ``fallback_keys``.
    """

    @cached_property
    def _keys(self) -> tuple[bytes, ...]:
        # Derived once, not per task; the first one signs, all of them verify.
        return tuple(_derive(k, self.salt) for k in (self.key, *self.fallback_keys))

    def sign(self, data: bytes) -> bytes:
        mac = hmac.new(self._keys[0], data, hashlib.sha256).digest()
        return b"".join((_VERSION, mac, data))

    def unsign(self, signed: bytes) -> bytes:
        if len(signed) < 1 + _MAC_SIZE or signed[:1] != _VERSION:
            raise BadSignature("not a signed qhive package (too short or unknown format)")
        mac, data = signed[1 : 1 + _MAC_SIZE], signed[1 + _MAC_SIZE :]
        for key in self._keys:
            if hmac.compare_digest(mac, hmac.new(key, data, hashlib.sha256).digest()):
                return bytes(data)
        raise BadSignature(
            f"signature does not match (salt {self.salt!r}): the package was altered, or was "
            "signed with a secret key or cluster name this process does not know"
        )
