"""Task packages: serializer -> optional zlib -> signer, and back.

The signed bytes are ``b"Q" + flags + len(name) + serializer name + body``.
Carrying the serializer name lets a cluster say *which* serializer made a
package it cannot read, instead of failing inside pickle or json.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

from qhive.contracts import Serializer, Signer
from qhive.drivers import build_driver
from qhive.errors import ConfigError, SerializationError

if TYPE_CHECKING:
    from qhive.config import Config
    from qhive.drivers import DriverRegistry

_MAGIC = b"Q"
_COMPRESSED = 0x01


class TaskCodec:
    """Encodes task packages for the broker and decodes what comes back.

    :meth:`decode` verifies the signature before anything else: bytes that fail
    it raise :class:`qhive.errors.BadSignature` and are never deserialized.
    """

    def __init__(
        self,
        serializer: Serializer,
        signer: Signer,
        *,
        serializer_name: str,
        compress: bool = False,
    ) -> None:
        name = serializer_name.encode()
        if len(name) > 255:
            raise ValueError("serializer name longer than 255 bytes")
        self.serializer = serializer
        self.signer = signer
        self.serializer_name = serializer_name
        self.compress = compress
        self._header = bytes((len(name),)) + name

    def encode(self, obj: Any) -> bytes:
        body = self.serializer.dumps(obj)
        flags = 0
        if self.compress:
            packed = zlib.compress(body)
            if len(packed) < len(body):  # tiny packages grow when compressed
                body, flags = packed, _COMPRESSED
        return self.signer.sign(b"".join((_MAGIC, bytes((flags,)), self._header, body)))

    def decode(self, package: bytes) -> Any:
        data = self.signer.unsign(package)  # BadSignature propagates: nothing is unpickled
        if len(data) < 3 or data[:1] != _MAGIC:
            raise SerializationError("signed data is not a qhive task package")
        flags, name_len = data[1], data[2]
        name = data[3 : 3 + name_len].decode(errors="replace")
        if name != self.serializer_name:
            raise SerializationError(
                f"package was serialized with {name!r} but this process uses "
                f"{self.serializer_name!r}; set the same 'serializer' on every process"
            )
        body = data[3 + name_len :]
        if flags & _COMPRESSED:
            try:
                body = zlib.decompress(body)
            except zlib.error as exc:
                raise SerializationError(f"cannot decompress task package: {exc}") from exc
        return self.serializer.loads(body)


def build_codec(config: Config, registry: DriverRegistry | None = None) -> TaskCodec:
    """The codec ``config`` describes: its serializer, its signer keyed by the
    secret key (and fallbacks) and salted with the cluster ``name``."""
    if not config.secret_key:
        raise ConfigError(
            "qhive signs every task and needs a secret key: pass secret_key= to "
            "Config.from_dict (under Django it is settings.SECRET_KEY)",
            key="secret_key",
        )
    serializer = build_driver("serializer", config.serializer, registry=registry,
                              option_key="serializer")
    signer = build_driver("signer", config.signer, registry=registry, option_key="signer",
                          key=config.secret_key, salt=config.name,
                          fallback_keys=config.secret_key_fallbacks, config=config)
    return TaskCodec(serializer, signer, serializer_name=config.serializer,
                     compress=config.compress)
