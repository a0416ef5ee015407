"""How the ``Task`` table keeps ``args``, ``kwargs`` and ``result``: signed bytes.

Django Q2 stores these columns as bare pickles, so anyone who can write to the
table can make the next process that reads a row run code. Here every value is
stored as a package of the cluster's codec (:func:`qhive.codec.build_codec`):
the configured serializer, then an HMAC-SHA256 signature keyed by
``SECRET_KEY`` and salted with the cluster ``name``. Reading verifies the
signature *before* anything is deserialized; ``SECRET_KEY_FALLBACKS`` still
verify, so keys rotate without losing stored results.

A stored value that fails verification (tampered with, written with another
key or cluster name) or that cannot be decoded never raises on read: it reads
as an :class:`UnreadableValue` saying why, and a warning is logged. A bad row
must not take down an admin list or a ``fetch_group`` of good rows.

Which codec reads and writes:

1. inside ``with use_codec(codec):`` that codec (the store uses this for its
   own queries, so it always reads with the config it was built with);
2. else the codec installed with :func:`set_codec` (the Django integration may
   install the one of its cluster config);
3. else one built once, lazily, from Django's settings: ``SECRET_KEY``,
   ``SECRET_KEY_FALLBACKS`` and ``Q_CLUSTER`` (``name``, ``serializer``,
   ``signer``). It is rebuilt when a test overrides one of these settings.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from qhive.codec import TaskCodec
from qhive.config import Config
from qhive.errors import BadSignature
from qhive.result_packages import codec_for

__all__ = [
    "UnreadableValue",
    "ValueCodec",
    "get_codec",
    "set_codec",
    "settings_config",
    "use_codec",
    "with_django_secret",
]

logger = logging.getLogger("qhive.store.orm")


class UnreadableValue:
    """Stands in for a stored value that cannot be read back.

    ``reason`` says why: the signature did not verify (the row was altered, or
    written with a secret key or cluster ``name`` this process does not know),
    or the verified bytes could not be deserialized (another serializer).
    Such bytes are never handed to a deserializer unverified.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<unreadable stored value: {self.reason}>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnreadableValue) and other.reason == self.reason

    def __hash__(self) -> int:
        return hash((UnreadableValue, self.reason))

    def __reduce__(self) -> tuple[Any, ...]:
        return (UnreadableValue, (self.reason,))


class ValueCodec:
    """Encodes values for the table and decodes what is stored.

    Encodes with the first codec (the cluster's). Decodes with the first codec
    that accepts the package, so rows written by an ``ALT_CLUSTERS`` entry with
    another serializer or signer read back too. Each codec checks the signature
    and then the serializer name before deserializing, so trying several never
    feeds unverified bytes, or another serializer's bytes, to a deserializer.
    """

    def __init__(self, codecs: Sequence[TaskCodec]) -> None:
        if not codecs:
            raise ValueError("ValueCodec needs at least one codec")
        self.codecs = tuple(codecs)

    @classmethod
    def for_config(cls, config: Config) -> ValueCodec:
        """The codec of ``config``, then those of its ``ALT_CLUSTERS`` entries that
        use another serializer or signer."""
        variants = [config]
        seen = {(config.serializer, config.signer)}
        for overrides in config.alt_clusters.values():
            pair = (overrides.get("serializer", config.serializer),
                    overrides.get("signer", config.signer))
            if pair not in seen:
                seen.add(pair)
                variants.append(dataclasses.replace(config, serializer=pair[0], signer=pair[1]))
        return cls([codec_for(c, "qhive-store-orm") for c in variants])

    def encode(self, value: Any) -> bytes:
        """Signed bytes for ``value``; raises :class:`qhive.errors.SerializationError`
        (or whatever the serializer raises) if it cannot be encoded."""
        return self.codecs[0].encode(value)

    def decode(self, data: bytes) -> Any:
        """The value in ``data``; raises BadSignature or SerializationError."""
        first: Exception | None = None
        for codec in self.codecs:
            try:
                return codec.decode(data)
            except Exception as exc:
                first = first or exc
        assert first is not None
        raise first

    def read(self, data: bytes, what: str = "value") -> Any:
        """Like :meth:`decode`, but an :class:`UnreadableValue` instead of an error."""
        try:
            return self.decode(data)
        except BadSignature as exc:
            reason = f"the stored {what} failed signature verification ({exc})"
        except Exception as exc:
            reason = f"the stored {what} cannot be decoded ({type(exc).__name__}: {exc})"
        logger.warning("qhive_store_orm: %s", reason)
        return UnreadableValue(reason)

    def __repr__(self) -> str:
        names = ", ".join(f"{c.serializer_name}+{type(c.signer).__name__}" for c in self.codecs)
        return f"<ValueCodec {names}>"


# --------------------------------------------------------------------------- from Django's settings


def settings_config() -> Config:
    """The cluster config of Django's settings: ``Q_CLUSTER`` with ``SECRET_KEY``,
    ``SECRET_KEY_FALLBACKS`` and ``TIME_ZONE`` (``Q_CLUSTER_NAME`` picks the cluster)."""
    return Config.from_dict(
        getattr(settings, "Q_CLUSTER", None) or {},
        secret_key=settings.SECRET_KEY,
        secret_key_fallbacks=getattr(settings, "SECRET_KEY_FALLBACKS", ()) or (),
        time_zone=getattr(settings, "TIME_ZONE", None),
    )


def with_django_secret(config: Config) -> Config:
    """``config`` itself if it has a secret key, else a copy keyed by Django's
    ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS`` (its ``name`` and serializer kept)."""
    if config.secret_key:
        return config
    return dataclasses.replace(
        config,
        secret_key=settings.SECRET_KEY,
        secret_key_fallbacks=tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ()) or ()),
    )


# --------------------------------------------------------------------------- the current codec

_current: contextvars.ContextVar[ValueCodec | None] = contextvars.ContextVar(
    "qhive_store_orm_codec", default=None
)
_installed: ValueCodec | None = None
_from_settings: ValueCodec | None = None
_lock = threading.Lock()


def get_codec() -> ValueCodec:
    """The codec model fields use now (see the module docs for the order)."""
    global _from_settings
    codec = _current.get()
    if codec is not None:
        return codec
    if _installed is not None:
        return _installed
    if _from_settings is None:
        with _lock:
            if _from_settings is None:
                _from_settings = ValueCodec.for_config(settings_config())
    return _from_settings


def _as_codec(codec: ValueCodec | Config) -> ValueCodec:
    if isinstance(codec, Config):
        return ValueCodec.for_config(with_django_secret(codec))
    return codec


def set_codec(codec: ValueCodec | Config | None) -> None:
    """Install the process-wide codec of the models (``None``: back to the one
    built from Django's settings). A :class:`~qhive.config.Config` is turned
    into its codec."""
    global _installed
    _installed = None if codec is None else _as_codec(codec)


@contextlib.contextmanager
def use_codec(codec: ValueCodec | Config) -> Iterator[ValueCodec]:
    """Read and write model values with ``codec`` in this block (this thread or task only)."""
    codec = _as_codec(codec)
    token = _current.set(codec)
    try:
        yield codec
    finally:
        _current.reset(token)


_SETTINGS = {"SECRET_KEY", "SECRET_KEY_FALLBACKS", "Q_CLUSTER", "TIME_ZONE"}


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    global _from_settings
    if setting in _SETTINGS:
        _from_settings = None


setting_changed.connect(_settings_changed, dispatch_uid="qhive_store_orm.codec")
