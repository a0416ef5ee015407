"""One Disque node at a time, and the next one when it fails.

Disque is multi-master: a client may use any node of a Disque cluster. Each process
starts at a node of its own (``pid % len(disque_nodes)``), which spreads the web
processes and clusters over the nodes as Django Q's random pick did, while the
threads of one process — a cluster's pusher and monitor, each with a broker of its
own — start at the same node: a job is acknowledged, touched and released on the node
that handed it out.

A command whose node cannot be used — connection refused or lost, no answer within
the socket timeout, the password refused — goes to the next node of the list, then the
next, wrapping around; the node that answers is used from then on, and the switch is
logged. Only when no node answers is it an error: a
:class:`~qhive.errors.BrokerConnectionError` naming every node and why, which a cluster
retries with its outage back-off. An error the server answers (a full cluster, a bad
job id) is a :class:`~qhive.errors.BrokerError` and goes to no other node.

A command whose connection broke after it was sent may have run on the old node: sent
again to the next one, an ``ADDJOB`` can then add the task twice (delivery is at least
once anyway).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

import redis
from qhive.contracts import ProcessLocal
from qhive.errors import BrokerConnectionError, BrokerError
from redis.backoff import NoBackoff
from redis.retry import Retry

from qhive_broker_disque.options import NODES, PLUGIN, DisqueOptions, Node

__all__ = ["CONNECT_TIMEOUT", "SOCKET_TIMEOUT", "NodeConnection"]

T = TypeVar("T")
logger = logging.getLogger("qhive.broker.disque")

#: A node that does not answer within this many seconds is given up for the next one.
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
#: Nodes this process already said it uses (said once, not per broker instance).
_announced: set[str] = set()


class NodeConnection(ProcessLocal):
    """The client of the node in use, and the failover to the next node.

    Pickles without its clients (a copy reconnects on first use, starting at the node
    the original used last).
    """

    def __init__(self, options: DisqueOptions) -> None:
        self.options = options
        self.index: int | None = None  # of the node in use; None until one answered
        self._init_local_state()

    #: Left behind by a pickled copy, which makes its own (ProcessLocal).
    local_state = ("_clients", "_lock")

    def _init_local_state(self) -> None:
        self._clients: dict[int, redis.Redis] = {}
        self._lock = threading.Lock()

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.options.nodes

    @property
    def node(self) -> Node:
        """The node in use (or the one this process starts at)."""
        return self.nodes[self._start()]

    def _start(self) -> int:
        """The index of the node to try first: the one in use, else this process's."""
        return os.getpid() % len(self.nodes) if self.index is None else self.index

    def _client(self, index: int) -> redis.Redis:
        with self._lock:
            client = self._clients.get(index)
            if client is None:
                node = self.nodes[index]
                # RESP2: redis-py's RESP3 handshake (HELLO 3) means something else to Disque.
                client = self._clients[index] = redis.Redis(
                    host=node.host, port=node.port, password=self.options.password,
                    protocol=2, socket_timeout=SOCKET_TIMEOUT,
                    socket_connect_timeout=CONNECT_TIMEOUT,
                    retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
            return client

    def _drop(self, index: int) -> None:
        with self._lock:
            client = self._clients.pop(index, None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
                client.connection_pool.disconnect()

    def close(self) -> None:
        """Drop every connection; the next command opens a new one."""
        for index in list(self._clients):
            self._drop(index)

    def run(self, what: str, command: Callable[[redis.Redis], T]) -> T:
        """``command(client)`` on the node in use, else on the next that answers."""
        start = self._start()
        failures: list[str] = []
        refused = 0
        for step in range(len(self.nodes)):
            index = (start + step) % len(self.nodes)
            node = self.nodes[index]
            try:
                result = command(self._client(index))
            except redis.AuthenticationError as exc:  # before ConnectionError: a subclass
                self._drop(index)
                refused += 1
                failures.append(f"{node} ({_auth_problem(exc, self.options.password)})")
                continue
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._drop(index)
                failures.append(f"{node} ({exc})")
                continue
            except redis.ResponseError as exc:
                raise BrokerError(f"{PLUGIN}: {what} failed on the Disque node {node}: "
                                  f"{exc}{_hint(exc)}") from exc
            self.index = index
            self._announce(node, failures)
            return result
        if refused == len(self.nodes):
            raise BrokerConnectionError(
                f"{PLUGIN}: {what} failed: every node of {NODES} refused the connection's "
                f"password: {', '.join(failures)}; set Q_CLUSTER['disque_auth'] to the "
                f"nodes' requirepass")
        raise BrokerConnectionError(
            f"{PLUGIN}: {what} failed: no node of {NODES} can be reached: "
            f"{', '.join(failures)}. Are the disque-server processes running and reachable "
            f"from this host?")

    def _announce(self, node: Node, failures: list[str]) -> None:
        if failures:
            logger.warning("%s: using the Disque node %s now; %s", PLUGIN, node,
                           "; ".join(f"{f} failed" for f in failures))
        elif str(node) not in _announced:
            logger.info("%s: using the Disque node %s (of %d in %s)", PLUGIN, node,
                        len(self.nodes), NODES)
        _announced.add(str(node))


def _auth_problem(exc: Exception, password: str | None) -> str:
    if password is None:
        return "it needs a password: set Q_CLUSTER['disque_auth']"
    return f"it refused the password of Q_CLUSTER['disque_auth']: {exc}"


def _hint(exc: redis.ResponseError) -> str:
    text = str(exc)
    if text.lower().startswith("unknown command"):
        return " — is it a Disque server? (a Redis server does not know Disque's commands)"
    if text.startswith("NOREPL"):
        maybe = (" Disque deletes the copies it made, but the task may still run."
                 if "Timeout" in text else "")
        return (" — Disque could not copy the job to as many nodes as asked (by default every "
                "node of its cluster, at most 3): is a node down? Bring it back, remove it "
                "with CLUSTER FORGET, or accept fewer copies with "
                "Q_CLUSTER['broker_options'] = {'replicate': 1}." + maybe)
    return ""
