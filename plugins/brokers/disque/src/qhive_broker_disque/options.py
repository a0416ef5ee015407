"""Django Q's Disque settings, checked before anything connects.

* ``disque_nodes`` — the nodes, ``"host:port"`` each (``"[::1]:7711"`` for IPv6);
* ``disque_auth`` — the password of the nodes (``requirepass``), or None;
* ``disque_fastack`` — acknowledge with ``FASTACK`` instead of ``ACKJOB``;

and two of qhive's own, given in ``Q_CLUSTER["broker_options"]``:

* ``replicate`` — how many nodes hold a copy of each job; None (the default) lets
  Disque choose: every node of its cluster, at most 3;
* ``ttl`` — seconds a job lives, delivered or not (Disque's default is one day, after
  which a task still waiting would silently go; qhive asks for 30 days).

Every mistake is a :class:`~qhive.errors.ConfigError` of one line naming the setting
and showing how to write it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from qhive.errors import ConfigError

__all__ = ["DEFAULT_TTL", "PLUGIN", "DisqueOptions", "Node", "parse_options"]

#: How the broker names itself in messages.
PLUGIN = "Disque broker"
#: How long a job lives unless ``ttl`` says otherwise: 30 days.
DEFAULT_TTL = 30 * 24 * 3600
#: Disque's default port, for the examples in messages.
DEFAULT_PORT = 7711
NODES = "Q_CLUSTER['disque_nodes']"
EXAMPLE = f"['127.0.0.1:{DEFAULT_PORT}']"


@dataclasses.dataclass(frozen=True)
class Node:
    """One Disque node of ``disque_nodes``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class DisqueOptions:
    """The checked settings (the password is never part of the repr)."""

    nodes: tuple[Node, ...]
    password: str | None = dataclasses.field(default=None, repr=False)
    fastack: bool = False
    replicate: int | None = None
    ttl: int = DEFAULT_TTL


def parse_options(*, disque_nodes: Any, disque_auth: Any = None, disque_fastack: Any = False,
                  replicate: Any = None, ttl: Any = None, retry: float = 60) -> DisqueOptions:
    """The settings checked; ``retry`` is the cluster's (a job must live longer)."""
    return DisqueOptions(
        nodes=_nodes(disque_nodes),
        password=_password(disque_auth),
        fastack=_flag(disque_fastack),
        replicate=_replicate(replicate),
        ttl=_ttl(ttl, retry),
    )


def _fail(message: str, key: str) -> ConfigError:
    return ConfigError(f"{PLUGIN}: {message}", key=key)


def _nodes(value: Any) -> tuple[Node, ...]:
    if value is None:
        raise _fail(f"{NODES} is not set: list the Disque nodes as 'host:port', "
                    f"e.g. {EXAMPLE}", "disque_nodes")
    if isinstance(value, str):
        raise _fail(f"{NODES} must be a list of 'host:port' strings, got the string "
                    f"{value!r}: write [{value!r}]", "disque_nodes")
    if not isinstance(value, Iterable):
        raise _fail(f"{NODES} must be a list of 'host:port' strings such as {EXAMPLE}, "
                    f"got {type(value).__name__}", "disque_nodes")
    nodes = [_node(item, index) for index, item in enumerate(value)]
    if not nodes:
        raise _fail(f"{NODES} is empty: list at least one Disque node as 'host:port', "
                    f"e.g. {EXAMPLE}", "disque_nodes")
    return tuple(dict.fromkeys(nodes))  # a node listed twice is tried once


def _node(item: Any, index: int) -> Node:
    where = f"{NODES}[{index}]"
    if not isinstance(item, str):
        raise _fail(f"{where} must be a 'host:port' string such as '127.0.0.1:{DEFAULT_PORT}', "
                    f"got {type(item).__name__} {item!r}", "disque_nodes")
    text = item.strip()
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [::1]:7711
    elif ":" in host:  # a bare IPv6 address: the last group is not a port
        host, colon, port = "", "", ""
    if not colon or not host:
        example = f"[{text}]" if text.count(":") > 1 else (text or "127.0.0.1")
        raise _fail(f"{where} = {item!r} is not 'host:port': write it as "
                    f"'{example}:{DEFAULT_PORT}' (Disque's default port)", "disque_nodes")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _fail(f"{where} = {item!r} has no valid port (a number from 1 to 65535): "
                    f"write e.g. '{host}:{DEFAULT_PORT}'", "disque_nodes")
    return Node(host, int(port))


def _password(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _fail(f"Q_CLUSTER['disque_auth'] must be the password of the Disque nodes (a "
                    f"string) or None, got {type(value).__name__}", "disque_auth")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(f"Q_CLUSTER['disque_fastack'] must be True or False, got {value!r}",
                    "disque_fastack")
    return value


def _replicate(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _fail(f"Q_CLUSTER['broker_options']['replicate'] must be how many Disque nodes "
                    f"keep a copy of each job (a whole number from 1), or None for Disque's "
                    f"choice (every node, at most 3); got {value!r}", "broker_options.replicate")
    return value


def _ttl(value: Any, retry: float) -> int:
    if value is None:
        return max(DEFAULT_TTL, 2 * math.ceil(retry))
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(f"Q_CLUSTER['broker_options']['ttl'] must be the seconds a job lives "
                    f"(a whole number above 0), got {value!r}", "broker_options.ttl")
    if value <= math.ceil(retry):
        raise _fail(f"Q_CLUSTER['broker_options']['ttl'] ({value} s) must be longer than "
                    f"Q_CLUSTER['retry'] ({retry} s): a task not acknowledged would expire "
                    f"before it is delivered again", "broker_options.ttl")
    return value
