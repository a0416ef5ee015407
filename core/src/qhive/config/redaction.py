"""What may be shown of a setting's value: secrets masked, at any depth.

A value is masked whole when its key looks secret (``password``, ``token``,
``key``, ``dsn``, ...). In a string holding a URL, the password of
``scheme://user:password@host`` and secret-looking query values are masked;
the rest of the URL stays, so that a log still says which host was meant.

Used for :meth:`Config.redacted() <qhive.config.Config.redacted>` (``qinfo
--config``), the reprs of :class:`~qhive.config.Config` and
:class:`~qhive.config.FrozenMap` (plugin tracing logs hook arguments) and the
values quoted in :class:`~qhive.errors.ConfigError` messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: What a secret is replaced with.
MASK = "********"

_SECRET_WORDS = ("password", "passwd", "secret", "token", "key", "dsn", "access", "auth",
                 "credential")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)(?P<pw>[^/?#\s]+)@")
_URL_QUERY_ITEM = re.compile(r"(?P<head>[?&;](?P<name>[^=&;#\s]+)=)(?P<value>[^&;#\s]+)")


def looks_secret(name: Any) -> bool:
    """Whether a value stored under ``name`` is masked whole."""
    return isinstance(name, str) and any(w in name.lower() for w in _SECRET_WORDS)


def mask_url(text: str) -> str:
    """Mask the password of ``scheme://user:password@host`` and secret-looking query values."""
    if "://" not in text:
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _URL_QUERY_ITEM.sub(
        lambda m: f"{m['head']}{MASK}" if looks_secret(m["name"]) else m[0], text
    )


def redact(name: Any, value: Any, secrets: frozenset = frozenset()) -> Any:
    """A plain copy of ``value`` with secret-looking entries and URL passwords masked;
    a string or bytes value that is one of ``secrets`` is masked too."""
    if value is None:
        return None
    if looks_secret(name):
        return MASK
    if isinstance(value, Mapping):
        return {k: redact(k, v, secrets) for k, v in value.items()}
    if isinstance(value, (tuple, list, set, frozenset)):
        return [redact(None, v, secrets) for v in value]
    if isinstance(value, (str, bytes)) and value in secrets:
        return MASK
    if isinstance(value, str):
        return mask_url(value)
    return value
