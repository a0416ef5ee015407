"""The plugin's settings, ``Q_CLUSTER["plugins"]["prometheus"]``, read and checked.

Pure data: no import of ``prometheus_client`` and no socket, so that ``manage.py check``
and every process that loads the plugin pay nothing. An ``ALT_CLUSTERS`` entry with a
``plugins`` key of its own replaces the root's (a shallow merge, as Django Q2 does), so a
cluster's options, and the key a problem names, are that entry's.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qhive.errors import did_you_mean

if TYPE_CHECKING:
    from qhive.config import Config

#: The plugin's name in ``Q_CLUSTER["plugins"]`` (its entry point's name).
NAME = "prometheus"

#: Seconds a task runs: from milliseconds to an hour.
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
               300.0, 900.0, 3600.0)
#: Seconds a task waits in the queue: a busy cluster's backlog can take hours to drain.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                3600.0, 4 * 3600.0)


@dataclasses.dataclass(frozen=True)
class Options:
    port: int
    #: loopback unless told: metrics name the project's task functions
    addr: str = "127.0.0.1"
    run_buckets: tuple[float, ...] = RUN_BUCKETS
    wait_buckets: tuple[float, ...] = WAIT_BUCKETS


_KEYS = tuple(f.name for f in dataclasses.fields(Options))


def setting(config: Config, key: str | None = None) -> str:
    """Where ``config``'s options are written: ``Q_CLUSTER['plugins']['prometheus']``, or
    the ``ALT_CLUSTERS`` entry's when it has a ``plugins`` key of its own."""
    root = "Q_CLUSTER"
    name = config.cluster_name
    if name != config.name and "plugins" in config.alt_clusters.get(name, {}):
        root += f"['ALT_CLUSTERS'][{name!r}]"
    return root + f"['plugins'][{NAME!r}]" + (f"[{key!r}]" if key is not None else "")


def configured(config: Config) -> bool:
    """Whether ``config`` asks for metrics at all (else the plugin does nothing)."""
    return config.plugins.get(NAME) is not None


def read(config: Config) -> tuple[Options | None, list[str]]:
    """``(options, [])``, or ``(None, problems)``: one line per problem, naming the key.
    ``(None, [])`` when ``config`` has no ``prometheus`` entry."""
    raw = config.plugins.get(NAME)
    if raw is None:
        return None, []
    if not isinstance(raw, Mapping):  # the core only lets mappings through; say so anyway
        return None, [f"Prometheus metrics: {setting(config)} must be a dict such as "
                      f"{{'port': 9191}}, got {type(raw).__name__}"]
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _KEYS:
            problems.append(_unknown(config, key))
            continue
        check = _CHECKS[key]
        try:
            values[key] = check(value)
        except ValueError as exc:
            problems.append(f"Prometheus metrics: {setting(config, key)} must be {exc}, "
                            f"got {_show(value)}")
    if "port" not in raw:
        problems.append(f"Prometheus metrics: {setting(config, 'port')} is missing: the port "
                        f"to serve /metrics on, e.g. 9191 (0: any free port, logged)")
    if problems:
        return None, problems
    return Options(**values), []


def _show(value: Any) -> str:
    # Settings reach us frozen (lists as tuples): show a sequence as it was written.
    if isinstance(value, (list, tuple)):
        return repr(list(value))
    return f"{value!r} ({type(value).__name__})"


def _unknown(config: Config, key: Any) -> str:
    hint = did_you_mean(key, _KEYS) or f" (known: {', '.join(_KEYS)})"
    return f"Prometheus metrics: unknown key {key!r} in {setting(config)}{hint}"


def _port(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ValueError("a port number from 0 to 65535 (0: any free port)")
    return value


def _addr(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("an address to listen on, such as '127.0.0.1' or '0.0.0.0'")
    return value.strip()


def _buckets(value: Any) -> tuple[float, ...]:
    expected = "a list of increasing numbers of seconds > 0, such as [0.1, 1, 10]"
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(expected)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(expected)
    bounds = tuple(float(v) for v in value)
    if bounds[-1] == math.inf:  # allowed, as prometheus_client allows it: it adds +Inf itself
        bounds = bounds[:-1]
    if not bounds or not all(math.isfinite(b) and b > 0 for b in bounds) or any(
            b <= a for a, b in itertools.pairwise(bounds)):
        raise ValueError(expected)
    return bounds


_CHECKS = {"port": _port, "addr": _addr, "run_buckets": _buckets, "wait_buckets": _buckets}
