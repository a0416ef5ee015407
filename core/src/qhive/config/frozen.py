"""The read-only mapping of every mapping-valued setting.

``MappingProxyType`` cannot be pickled, and a :class:`~qhive.config.Config`
travels to worker processes: :class:`FrozenMap` is a picklable, hashable,
read-only mapping that compares equal to a dict with the same items. Its repr
masks secrets (:mod:`qhive.config.redaction`), because the options of brokers
and stores end up in logs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from qhive.config.redaction import MASK, looks_secret, mask_url


class FrozenMap(Mapping[str, Any]):
    """A read-only, picklable mapping; compares equal to a dict with the same items.

    Used for every mapping-valued setting (``MappingProxyType`` cannot be pickled,
    and a :class:`Config` travels to worker processes).
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        object.__setattr__(self, "_data", dict(data))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        # Options of brokers and stores end up in logs (plugin tracing): never show a secret.
        shown = {k: _masked(k, v) for k, v in self._data.items()}
        return f"FrozenMap({shown!r})"

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._data,))

    def __or__(self, other: Any) -> FrozenMap:
        if not isinstance(other, Mapping):
            return NotImplemented
        return FrozenMap({**self._data, **other})

    def to_dict(self) -> dict[str, Any]:
        """A deep, plain copy: nested maps become dicts, tuples become lists."""
        return thaw(self)


def freeze(value: Any) -> Any:
    """Deep-copy ``value`` into immutable containers (dict -> FrozenMap, list -> tuple)."""
    if isinstance(value, Mapping):
        return FrozenMap({k: freeze(v) for k, v in value.items()})
    if type(value) in (list, tuple):
        return tuple(freeze(v) for v in value)
    if type(value) in (set, frozenset):
        return frozenset(freeze(v) for v in value)
    if value is None or isinstance(value, (str, bytes, int, float, complex, type)):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:  # e.g. an SSL context in broker options: share it rather than fail
        return value


def thaw(value: Any) -> Any:
    """The plain form of a frozen value: maps become dicts, tuples and lists lists."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [thaw(v) for v in value]
    return value


def _masked(name: Any, value: Any) -> Any:
    """``value`` for a repr: secret-looking entries and URL passwords masked, the
    container types kept (a nested FrozenMap masks itself)."""
    if value is None:
        return None
    if looks_secret(name):
        return MASK
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, Mapping):
        return {k: _masked(k, v) for k, v in value.items()}
    if type(value) in (tuple, list, set, frozenset):
        return type(value)(_masked(None, v) for v in value)
    if isinstance(value, str):
        return mask_url(value)
    return value
