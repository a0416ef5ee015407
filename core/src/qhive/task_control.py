"""Task control: the options that say when a task runs, before which others, and
how often it is tried — ``eta`` / ``countdown``, ``priority``, and the retry
policy ``max_attempts`` / ``retry_on`` / ``backoff``.

A task that sets none of them travels and settles as in Django Q2. The options
are checked when the task is enqueued, against the broker that takes it: a delay
or a priority the broker cannot keep is an :class:`~qhive.errors.UnsupportedOption`
there, never a silently ignored option in a worker. In the package they travel
as plain values (any serializer carries them): ``eta`` an aware datetime,
``retry_on`` dotted class names, ``backoff`` a dict.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qhive.config.checks import is_number
from qhive.contracts import PRIORITY_MAX, PRIORITY_MIN
from qhive.errors import UnsupportedOption

if TYPE_CHECKING:
    from qhive.config import Config
    from qhive.contracts import Broker

logger = logging.getLogger("qhive")

#: The options of this module (the last of ``qhive.task.OPTION_KEYS``).
CONTROL_KEYS = ("eta", "countdown", "priority", "max_attempts", "retry_on", "backoff")
#: A retry policy is set when the task has one of these.
RETRY_KEYS = ("max_attempts", "retry_on", "backoff")
#: Which broker capability each option needs.
_NEEDS = {"eta": "delay", "countdown": "delay", "backoff": "delay", "priority": "priority"}
_CAN = {"delay": "delay messages", "priority": "order messages by priority"}


@dataclasses.dataclass(frozen=True)
class Backoff:
    """How long a failed attempt waits before the next one.

    ``fixed``: ``base`` seconds each time. ``exponential``: ``base * 2 ** (n - 1)`` after
    the n-th attempt, at most ``cap``. With ``jitter`` the wait is drawn between half
    of that and all of it, so that tasks failing together do not come back together,
    while each wait stays at least as long as the one before.
    """

    kind: str = "exponential"
    base: float = 1.0
    cap: float = 600.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "exponential"):
            raise ValueError(f"backoff kind must be 'fixed' or 'exponential', got {self.kind!r}")
        for name in ("base", "cap"):
            value = getattr(self, name)
            if not (is_number(value) and value > 0):
                raise ValueError(f"backoff {name} must be a number of seconds > 0, "
                                 f"got {value!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first)."""
        if self.kind == "fixed":
            wait = self.base
        else:
            wait = min(self.cap, self.base * 2.0 ** min(max(attempt, 1) - 1, 64))
        return random.uniform(wait / 2, wait) if self.jitter else wait

    @classmethod
    def of(cls, value: Any) -> Backoff:
        """``backoff=`` as given: seconds (fixed), ``"fixed"`` / ``"exponential"``,
        a dict of these fields, or a :class:`Backoff`."""
        if isinstance(value, Backoff):
            return value
        if is_number(value):
            return cls("fixed", base=value, cap=value, jitter=False)
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"backoff has no {sorted(unknown)[0]!r}; it takes kind, base, "
                                 f"cap and jitter")
            return cls(**value)
        raise ValueError(f"backoff must be seconds, 'fixed', 'exponential', a dict or a "
                         f"qhive.task_control.Backoff, got {value!r}")


def prepare(options: dict[str, Any], broker: Broker | None, *,
            now: dt.datetime | None = None) -> None:
    """Check and normalise the control options of ``async_task`` in place, for a task
    ``broker`` takes (None: it runs here, ``sync``): ``countdown`` becomes ``eta``;
    ``retry_on`` dotted class names; ``backoff`` a dict; ``priority=0`` is dropped.

    :raises ValueError / TypeError: a value that is not what the option takes.
    :raises UnsupportedOption: the broker cannot keep the option.
    """
    if not any(key in options for key in CONTROL_KEYS):
        return
    if broker is not None:
        _check_capabilities(options, broker)
    now = now or dt.datetime.now(dt.UTC)
    if "countdown" in options:
        if "eta" in options:
            raise TypeError("async_task takes eta= or countdown=, not both")
        countdown = options.pop("countdown")
        if not (is_number(countdown) and countdown >= 0):
            raise ValueError(f"async_task(countdown=...) must be a number of seconds >= 0, "
                             f"got {countdown!r}")
        options["eta"] = now + dt.timedelta(seconds=countdown)
    if "eta" in options:
        eta = options["eta"]
        if not isinstance(eta, dt.datetime) or eta.tzinfo is None:
            raise ValueError(f"async_task(eta=...) must be a timezone-aware datetime "
                             f"(django.utils.timezone.now() + timedelta(...)), got {eta!r}")
        options["eta"] = eta.astimezone(dt.UTC)
    if "priority" in options:
        priority = options["priority"]
        if type(priority) is not int or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise ValueError(f"async_task(priority=...) must be an int from {PRIORITY_MIN} to "
                             f"{PRIORITY_MAX} (higher runs first; default 0), got {priority!r}")
        if priority == 0:
            del options["priority"]
    if "max_attempts" in options:
        limit = options["max_attempts"]
        if type(limit) is not int or limit < 0:
            raise ValueError(f"async_task(max_attempts=...) must be an int >= 1 (0: no limit), "
                             f"got {limit!r}")
    if "retry_on" in options:
        options["retry_on"] = _class_names(options["retry_on"])
    if "backoff" in options:
        options["backoff"] = dataclasses.asdict(Backoff.of(options["backoff"]))



def delivery(task: Mapping[str, Any], *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The keywords of ``broker.enqueue`` for ``task``: ``delay`` until its ``eta`` (a
    chain link's ``countdown`` counts from now) and ``priority``; empty for a plain task."""
    options: dict[str, Any] = {}
    eta, countdown = task.get("eta"), task.get("countdown")
    if eta is not None or countdown:
        now = now or dt.datetime.now(dt.UTC)
        delay = countdown if eta is None else (eta - now).total_seconds()
        if delay > 0:
            options["delay"] = float(delay)
    if task.get("priority"):
        options["priority"] = task["priority"]
    return options


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """What becomes of a failed attempt under the task's retry policy."""

    #: It is tried again (not acknowledged).
    again: bool
    #: When it is tried again, a broker delay (seconds): ``release(delay=…)``;
    #: None: when its receipt runs out (``retry``), as in Django Q2.
    delay: float | None = None


def plan_retry(task: Mapping[str, Any], error: BaseException | None, attempt: int,
               config: Config) -> Retry | None:
    """The fate of failed attempt ``attempt`` (1 for the first) of ``task``; None when
    the task has no retry policy of its own (the cluster's rules apply).

    It is tried again unless its error is none of ``retry_on`` (a worker that died or
    a timeout counts as retryable) or ``max_attempts`` (the task's, else the
    cluster's; 0: no limit) attempts were made.
    """
    if not any(key in task for key in RETRY_KEYS):
        return None
    retry_on = task.get("retry_on")
    if retry_on and error is not None and not _is_one_of(error, retry_on):
        return Retry(again=False)
    limit = task.get("max_attempts", config.max_attempts)
    if limit and attempt >= limit:
        return Retry(again=False)
    try:
        backoff = Backoff.of(task["backoff"]) if task.get("backoff") else None
    except (TypeError, ValueError) as exc:  # a producer's bug: retry as Django Q2 would
        logger.error("task %s: %s; it is tried again after 'retry'", task.get("id"), exc)
        backoff = None
    return Retry(again=True, delay=backoff.delay(attempt) if backoff else None)


def _check_capabilities(options: Mapping[str, Any], broker: Broker) -> None:
    for key, capability in _NEEDS.items():
        if key == "priority" and options.get(key) == 0:
            continue  # the default
        if key in options and not getattr(broker.capabilities, capability):
            raise UnsupportedOption(
                f"async_task({key}=...) needs a broker that can {_CAN[capability]}; "
                f"{type(broker).__name__} (queue {broker.queue!r}) cannot (it does not "
                f"declare Capabilities.{capability}); qplugins list shows the installed brokers")
    if "backoff" in options and not broker.capabilities.receipts:
        raise UnsupportedOption(
            f"async_task(backoff=...) needs a broker with receipts, so that a failed task "
            f"comes back; {type(broker).__name__} has none")


def _class_names(value: Any) -> list[str]:
    classes = value if isinstance(value, (tuple, list)) else [value]
    names = []
    for cls in classes:
        if isinstance(cls, str) and cls:
            names.append(cls)
        elif isinstance(cls, type) and issubclass(cls, BaseException):
            names.append(f"{cls.__module__}.{cls.__qualname__}")
        else:
            raise TypeError(f"async_task(retry_on=...) takes exception classes (or their dotted "
                            f"paths), got {cls!r}")
    return names


def _is_one_of(error: BaseException, names: list[str]) -> bool:
    mro = {f"{c.__module__}.{c.__qualname__}" for c in type(error).__mro__}
    # builtins may be named without their module: retry_on=["ConnectionError"]
    mro |= {c.__qualname__ for c in type(error).__mro__ if c.__module__ == "builtins"}
    return any(name in mro for name in names)
