"""The checks the settings table uses: each validates and normalizes one value.

A check is a :class:`Check`: ``convert(value, path)`` returns the value to keep
(mappings frozen, lists made tuples, level names upper-cased) or raises
:class:`Invalid`; the check then raises a :class:`~qhive.errors.ConfigError`
that says where the value sits (a :class:`KeyPath`: ``Q_CLUSTER['timeout']``),
what was expected (``expected`` completes "must be ...") and what was given,
with secrets masked, since error messages end up in logs.

The builders (:func:`integer`, :func:`text`, :func:`mapping`, ...) make the
common checks; the ``*_value`` converters are those of one setting each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from qhive.config.frozen import FrozenMap, freeze
from qhive.config.redaction import MASK, looks_secret, redact
from qhive.errors import ConfigError, did_you_mean

# --------------------------------------------------------------------------- the machinery


@dataclasses.dataclass(frozen=True)
class KeyPath:
    """Where a value sits: ``Q_CLUSTER['timeout']``, ``ALT_CLUSTERS['long']['timeout']``."""

    parts: tuple[Any, ...] = ()
    root: str = "Q_CLUSTER"

    def __truediv__(self, part: Any) -> KeyPath:
        return KeyPath((*self.parts, part), self.root)

    def __str__(self) -> str:
        root, parts = self.root, self.parts
        if root == "Q_CLUSTER" and parts[:1] == ("ALT_CLUSTERS",):
            root, parts = "ALT_CLUSTERS", parts[1:]  # how the docs name it
        return root + "".join(f"[{p!r}]" for p in parts)

    @property
    def key(self) -> str:
        """The dotted form kept in :attr:`ConfigError.key`."""
        return ".".join(str(p) for p in self.parts) or self.root


def show(value: Any, path: KeyPath) -> str:
    """``'four' (str)``, with secrets masked: error messages end up in logs."""
    last = path.parts[-1] if path.parts else path.root
    shown = MASK if looks_secret(last) and value is not None else repr(redact(None, value))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{shown} ({type(value).__name__})"


class Invalid(Exception):
    """Raised by a converter; :class:`Check` turns it into a ConfigError."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Check:
    """Validates and normalizes one value. ``expected`` completes "must be ..."."""

    expected: str
    convert: Callable[[Any, KeyPath], Any]

    def __call__(self, value: Any, path: KeyPath) -> Any:
        try:
            return self.convert(value, path)
        except Invalid as exc:
            reason = f": {exc.reason}" if exc.reason else ""
            raise ConfigError(
                f"{path} must be {self.expected}, got {show(value, path)}{reason}", key=path.key
            ) from None


@contextlib.contextmanager
def collecting(errors: list[ConfigError] | None) -> Iterator[None]:
    """Record a ConfigError in ``errors`` and go on, or let it propagate if there is no list."""
    try:
        yield
    except ConfigError as exc:
        if errors is None:
            raise
        errors.append(exc)


# Keys Django Q had and Django Q2 removed: naming one says why it is refused.
_REMOVED = {
    "has_replica": "it was removed in Django Q2; the scheduler follows the database router",
}


def unknown_key(key: Any, known: Iterable[str], where: KeyPath) -> ConfigError:
    """The error for ``key``, not one of ``known`` at ``where``: the nearest known key."""
    path = where / key
    if not isinstance(key, str):
        return ConfigError(f"{where} keys must be strings, got {show(key, where)}", key=path.key)
    head = f"unknown key {path}" if where.parts else f"unknown Q_CLUSTER key {key!r}"
    if key in _REMOVED:
        return ConfigError(f"{head}: {_REMOVED[key]}", key=path.key)
    hint = did_you_mean(key, known) or " (see the configuration docs for the keys qhive knows)"
    return ConfigError(head + hint, key=path.key)


# --------------------------------------------------------------------------- builders


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a finite float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _or_none(expected: str, none: bool) -> str:
    return f"{expected} or None" if none else expected


def integer(minimum: int, *, none: bool = False) -> Check:
    def convert(value: Any, path: KeyPath) -> Any:
        if (value is None and none) or (_is_int(value) and value >= minimum):
            return value
        raise Invalid

    return Check(_or_none(f"an int >= {minimum}", none), convert)


def number(*, above: float = 0, below: float | None = None, none: bool = False) -> Check:
    def convert(value: Any, path: KeyPath) -> Any:
        if value is None and none:
            return None
        if is_number(value) and value > above and (below is None or value < below):
            return value
        raise Invalid

    expected = f"a number > {above}" + (f" and < {below}" if below is not None else "")
    return Check(_or_none(expected, none), convert)


def boolean() -> Check:
    def convert(value: Any, path: KeyPath) -> Any:
        if isinstance(value, bool):
            return value
        raise Invalid

    return Check("True or False", convert)


def text(*, none: bool = False, pattern: str | None = None, what: str = "a non-empty string"
         ) -> Check:
    regex = re.compile(pattern) if pattern else None

    def convert(value: Any, path: KeyPath) -> Any:
        if value is None and none:
            return None
        if isinstance(value, str) and value and (regex is None or regex.fullmatch(value)):
            return value
        raise Invalid

    return Check(_or_none(what, none), convert)


def choice(*choices: str, none: bool = False) -> Check:
    def convert(value: Any, path: KeyPath) -> Any:
        if (value is None and none) or (isinstance(value, str) and value in choices):
            return value
        raise Invalid

    listed = ", ".join(repr(c) for c in choices)
    return Check(f"one of {listed} or None" if none else f"one of {listed}", convert)


def mapping(*, none: bool = False, what: str = "a mapping") -> Check:
    def convert(value: Any, path: KeyPath) -> Any:
        if value is None and none:
            return None
        if not isinstance(value, Mapping):
            raise Invalid
        if not all(isinstance(k, str) for k in value):
            raise Invalid("keys must be strings")
        return freeze(value)

    return Check(_or_none(what, none), convert)


def strings(*, none: bool = False) -> Check:
    def convert(value: Any, path: KeyPath) -> Any:
        if value is None and none:
            return None
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
            return tuple(value)
        raise Invalid

    return Check(_or_none("a list of strings", none), convert)


def either(*checks: Check, expected: str) -> Check:
    def convert(value: Any, path: KeyPath) -> Any:
        for check in checks:
            with contextlib.suppress(ConfigError):
                return check(value, path)
        raise Invalid

    return Check(expected, convert)


_NAME = r"[A-Za-z_][\w\-]*"
#: A dotted path: ``pkg.mod.Class`` or ``pkg.mod:Class``.
DOTTED = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+|[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.\w+)*"
_DRIVER_WHAT = "a driver name or a dotted path such as 'pkg.mod:Class'"


def driver(*, none: bool = False) -> Check:
    return text(none=none, pattern=f"{_NAME}|{DOTTED}", what=_DRIVER_WHAT)


# --------------------------------------------------------------------------- one setting each


def cached_value(value: Any, path: KeyPath) -> Any:
    if isinstance(value, bool) or (_is_int(value) and value > 0):
        return value
    raise Invalid


def queue_limit_value(value: Any, path: KeyPath) -> Any:
    if value is None or (_is_int(value) and value == 0):  # Django Q2: falsy means unbounded
        return None
    if _is_int(value) and value >= 1:
        return value
    raise Invalid


def log_level_value(value: Any, path: KeyPath) -> Any:
    levels = logging.getLevelNamesMapping()
    if isinstance(value, str) and value.upper() in levels:
        return value.upper()
    if _is_int(value) and value in levels.values():  # logging.DEBUG and friends
        return logging.getLevelName(value)
    raise Invalid


def time_zone_value(value: Any, path: KeyPath) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise Invalid
    try:
        zoneinfo.ZoneInfo(value)
    except ValueError as exc:  # malformed key such as "../etc"
        raise Invalid(str(exc)) from None
    except zoneinfo.ZoneInfoNotFoundError:
        # Without any tz database (Windows without tzdata) nothing can be checked.
        if zoneinfo.available_timezones():
            raise Invalid("no such time zone") from None
    return value


def error_reporters_value(value: Any, path: KeyPath) -> Any:
    value = mapping()(value, path)
    options = mapping(what="a mapping of the reporter's options")
    return FrozenMap({name: options(opts, path / name) for name, opts in value.items()})


def secret_key_value(value: Any) -> Any:
    """``SECRET_KEY``, which comes from Django's settings, not from ``Q_CLUSTER``."""
    if value is None or isinstance(value, (str, bytes)):
        return value
    # Never show the value: it may be the secret itself.
    raise ConfigError(f"SECRET_KEY must be a str or bytes, got a {type(value).__name__}",
                      key="SECRET_KEY")


def secret_key_fallbacks_value(value: Any) -> tuple[str | bytes, ...]:
    """``SECRET_KEY_FALLBACKS`` as a tuple; never shows a key."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError("SECRET_KEY_FALLBACKS must be a list of str or bytes, "
                          f"got a {type(value).__name__}", key="SECRET_KEY_FALLBACKS")
    keys = tuple(value)
    for key in keys:
        if not isinstance(key, (str, bytes)):
            raise ConfigError("SECRET_KEY_FALLBACKS must hold only str or bytes, "
                              f"got a {type(key).__name__}", key="SECRET_KEY_FALLBACKS")
    return keys
