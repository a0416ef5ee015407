"""Helpers shared by the contract suites (not part of the public API)."""

from __future__ import annotations

import pickle
import random
import uuid
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from qhive.config import Config

T = TypeVar("T")

#: Seconds added to every wait. Generous on purpose: the suites check
#: correctness, never speed, and must pass on a loaded two-core machine.
MARGIN = 10.0

#: One MiB of reproducible, incompressible, mostly non-UTF-8 bytes.
ONE_MIB = random.Random(20240611).randbytes(1 << 20)

#: Small payloads that break text-based drivers: NUL, invalid UTF-8, every byte value.
BINARY = b"\x00\xff\xfe\x80 not utf-8 \xc3\x28 \x00"
ALL_BYTES = bytes(range(256))


def unique(prefix: str) -> str:
    """A name no other test (or earlier run) uses: ``prefix-<12 hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_config(**settings: Any):
    """A :class:`qhive.config.Config` parsed from ``settings`` (Q_CLUSTER keys)."""
    # The cluster is named, so that a Q_CLUSTER_NAME in the environment changes nothing.
    return Config.from_dict(dict(settings), cluster=settings.get("name", "default"))


def bytes_difference(got: Any, expected: bytes) -> str | None:
    """Describe how ``got`` differs from ``expected`` in one line, or None if equal.

    Avoids pytest printing two 1 MiB reprs when a driver changes a payload.
    """
    if type(got) is not bytes:
        return f"expected bytes, got {type(got).__name__}"
    if got == expected:
        return None
    if len(got) != len(expected):
        return f"length {len(got)} instead of {len(expected)}"
    at = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
    return f"byte {at} is {got[at]:#04x} instead of {expected[at]:#04x}"


def assert_same_bytes(got: Any, expected: bytes, what: str) -> None:
    difference = bytes_difference(got, expected)
    if difference is not None:
        pytest.fail(f"{what}: {difference}", pytrace=False)


def pickled_copy(obj: T, what: str) -> T:
    """``pickle.loads(pickle.dumps(obj))``, failing the test with a clear message."""
    try:
        return pickle.loads(pickle.dumps(obj))
    except Exception as exc:
        pytest.fail(
            f"{what} {type(obj).__name__} does not survive pickling ({type(exc).__name__}: "
            f"{exc}); clusters hand drivers to worker processes, so keep connections in "
            f"attributes that __getstate__ drops and reopen them lazily",
            pytrace=False,
        )


def cleanup(action: Callable[[], Any], what: str) -> None:
    """Run a teardown step; a failure becomes a warning so it does not hide the test's own."""
    try:
        action()
    except Exception as exc:
        warnings.warn(f"contract cleanup: {what} raised {exc!r}", stacklevel=2)


def skip_unless(flag: bool, driver: Any, capability: str) -> None:
    """Skip the test unless ``driver`` declares ``capability``."""
    if not flag:
        pytest.skip(f"{type(driver).__name__} does not declare the {capability!r} capability")
