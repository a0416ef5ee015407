"""The ``iron-mq`` client, built from checked options, and its errors in qhive's terms.

The broker calls the client's own ``iron_mq.Queue`` methods; ``iron_core`` builds
every URL, header and body, finds the credentials (options, environment, iron.json)
and decodes the answers. One thing is replaced: ``IronClient._doRequest``, the one
function that sends a request, calls ``requests.get/post/...`` with no timeout and a
new connection per call. :class:`Transport` sends the same request through a
keep-alive session, with a connect timeout and a read timeout (``request_timeout``,
plus the ``wait`` of a long poll), so that a service that stops answering is an
error within seconds instead of a call that never returns.

:func:`refusal` turns what went wrong into one line naming the setting to fix:
an unreachable service is :class:`qhive.errors.BrokerConnectionError` (the cluster
backs off and retries), a refused token :class:`TokenRefused`, a refused queue
name :class:`QueueNameRefused` (both also :class:`qhive.errors.SetupError`: a
cluster does not start on them).
"""

from __future__ import annotations

import json
import re
from typing import Any

import iron_mq
import requests
from qhive.errors import BrokerConnectionError, BrokerError, ConfigError, SetupError

from qhive_broker_ironmq.options import PLUGIN, IronMQOptions, setting

__all__ = ["QueueNameRefused", "TokenRefused", "Transport", "new_client", "refusal",
           "status_of"]

#: What the broker keeps of a built client, to build it again in a pickled copy.
RESOLVED = ("host", "port", "protocol", "project_id", "token", "keystone", "api_version",
            "path_prefix")


class TokenRefused(BrokerConnectionError, SetupError):
    """IronMQ answered 401: the token is wrong or not for this project."""


class QueueNameRefused(BrokerError, SetupError):
    """IronMQ refused the queue name (the cluster ``name``)."""


class Transport:
    """Sends iron_core's requests through one ``requests.Session``, with timeouts."""

    def __init__(self, client: Any, request_timeout: float) -> None:
        self.client = client
        self.timeout = request_timeout
        self.session = requests.Session()

    def send(self, url: str, method: str, body: str = "", headers: dict | None = None
             ) -> requests.Response:
        """``IronClient._doRequest(url, method, body, headers)``, with timeouts."""
        headers = dict(headers or {})
        client = self.client
        if client.token or client.keystone:  # as iron_core does
            headers["Authorization"] = f"OAuth {client.token_provider.getToken()}"
        read = self.timeout + _long_poll(url, body)
        return self.session.request(method, url, data=body or None, headers=headers,
                                    timeout=(self.timeout, read))

    def close(self) -> None:
        self.session.close()


def _long_poll(url: str, body: str) -> float:
    """The seconds a reservation may wait on the server before it answers."""
    if not url.endswith("/reservations") or not body:
        return 0.0
    try:
        return float(json.loads(body).get("wait") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0.0


def new_client(options: IronMQOptions) -> tuple[iron_mq.IronMQ, Transport]:
    """``iron_mq.IronMQ(**options.client)`` sending through a :class:`Transport`.
    Opens no connection; missing credentials are a ConfigError naming the key."""
    try:
        mq = iron_mq.IronMQ(**options.client)
    except ValueError as exc:  # iron_core's "No project_id set", JSON errors of iron.json
        raise _credentials_error(exc, options) from None
    transport = Transport(mq.client, options.request_timeout)
    mq.client._doRequest = transport.send  # the one function that sends: see the docstring
    return mq, transport


def resolved(mq: iron_mq.IronMQ) -> dict[str, Any]:
    """The client's settings once iron_core has read every source (options, environment,
    files): enough to build the same client again without reading them."""
    return {key: getattr(mq.client, key) for key in RESOLVED
            if getattr(mq.client, key, None) is not None}


def _credentials_error(exc: ValueError, options: IronMQOptions) -> ConfigError:
    text = str(exc)
    sources = ("(or the IRON_{} / IRON_MQ_{} environment variable, or \"{}\" in iron.json "
               "or in the file of " + setting("config_file") + ")")
    token = (f"{setting('token')} {sources.format('TOKEN', 'TOKEN', 'token')}: "
             f"an API token of the project, from https://hud.iron.io")
    project = (f"{setting('project_id')} "
               f"{sources.format('PROJECT_ID', 'PROJECT_ID', 'project_id')}")
    if isinstance(exc, json.JSONDecodeError):
        return ConfigError(f"{PLUGIN}: an IronMQ config file is not valid JSON ({text}); "
                           f"iron_core reads ./iron.json, ~/.iron.json and "
                           f"{setting('config_file')}", key="iron_mq.config_file")
    if "project_id" in text:
        try:  # is the token missing too? (iron_core says one thing at a time)
            iron_mq.IronMQ(**{**options.client, "project_id": "-"})
        except ValueError:
            return ConfigError(f"{PLUGIN}: no token and no project id: set {token}, and "
                               f"{project}", key="iron_mq.token")
        return ConfigError(f"{PLUGIN}: no project id: set {project}",
                           key="iron_mq.project_id")
    if "token or keystone" in text:
        return ConfigError(f"{PLUGIN}: no token: set {token}", key="iron_mq.token")
    if "keystone" in text.lower():
        return ConfigError(f"{PLUGIN}: {setting('keystone')} needs server, tenant, username "
                           f"and password ({text})", key="iron_mq.keystone")
    return ConfigError(f"{PLUGIN}: iron_mq.IronMQ refused {options!r}: {text}", key="iron_mq")


# --------------------------------------------------------------------------- errors


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an error answer, else None."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code
    return None


def _server_message(response: requests.Response | None) -> str:
    if response is None:
        return ""
    try:
        return str(response.json().get("msg", "")) or response.reason or ""
    except (ValueError, AttributeError):
        return (response.text or response.reason or "").strip()[:200]


def _reason(exc: BaseException) -> str:
    """The OS's words for a connection failure ("[Errno 111] Connection refused")
    instead of urllib3's paragraph."""
    found = re.findall(r"\[Errno -?\d+\] [^'\")\]]+", str(exc))
    if found:
        return found[-1].strip()
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def refusal(exc: Exception, what: str, where: str, *, queue: str, project: str,
            timeout: float) -> Exception:
    """qhive's error for ``exc``, raised by the client during ``what``: one line, naming
    the service (``where``) and the setting to fix."""
    prefix = f"{PLUGIN}: {what} failed"
    if isinstance(exc, requests.Timeout):
        return BrokerConnectionError(
            f"{prefix}: IronMQ at {where} did not answer within {timeout:g} s; is it "
            f"overloaded or unreachable? ({setting('request_timeout')})")
    if isinstance(exc, requests.ConnectionError):
        return BrokerConnectionError(
            f"{prefix}: cannot reach IronMQ at {where} ({_reason(exc)}); check "
            f"{setting('host')}, {setting('port')} and {setting('protocol')}, and that the "
            f"service is reachable from this host")
    status = status_of(exc)
    if status is None:
        return BrokerError(f"{prefix}: {type(exc).__name__}: {exc}")
    message = _server_message(exc.response)  # type: ignore[attr-defined]
    said = f"{status} {message}".strip()
    if status == 401:
        return TokenRefused(
            f"{prefix}: IronMQ at {where} refused the token ({said}); check "
            f"{setting('token')} (or IRON_TOKEN / iron.json): it must be a v3 token of "
            f"project {project}")
    if status == 400 and "name" in message.lower():
        return QueueNameRefused(
            f"{prefix}: IronMQ at {where} refused the queue name {queue!r} ({said}); the "
            f"queue is named after the cluster: choose a Q_CLUSTER['name'] of letters, "
            f"digits, '-', '_' and '.'")
    if status == 404 and "project" in message.lower():
        return BrokerConnectionError(
            f"{prefix}: IronMQ at {where} has no project {project} ({said}); check "
            f"{setting('project_id')}")
    if status == 413:
        return BrokerError(
            f"{prefix}: IronMQ at {where} refused a message as too large ({said}); IronMQ's "
            f"plans take 64 KB or 256 KB per message, and the broker sends the task package "
            f"base64-encoded (4/3 of its size): pass large arguments by reference")
    if status >= 500:
        return BrokerConnectionError(f"{prefix}: IronMQ at {where} answered {said}; "
                                     f"the service is failing, try again later")
    return BrokerError(f"{prefix}: IronMQ at {where} answered {said}")
