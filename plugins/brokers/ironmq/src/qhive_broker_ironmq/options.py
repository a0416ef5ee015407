"""``Q_CLUSTER["iron_mq"]``: the keyword arguments Django Q2 passes to
``iron_mq.IronMQ(name=None, **IRON_MQ)``, checked before the client sees them.

The client's keys are ``iron_core.IronClient``'s: ``token``, ``project_id``, ``host``,
``port``, ``protocol``, ``api_version``, ``config_file``, ``keystone``, ``cloud``,
``path_prefix``. Any of them may instead come from where ``iron_core`` looks (lowest
first): ``~/.iron.json``, the ``IRON_*`` then ``IRON_MQ_*`` environment variables
(``IRON_TOKEN``, ``IRON_MQ_PROJECT_ID``, ...), ``./iron.json``, the ``config_file``,
then these options. qhive adds two keys of its own: ``request_timeout`` and
``min_reservation_timeout``.

Nothing here imports the client: the checks (``manage.py check``) use this module too.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

from qhive.errors import ConfigError, did_you_mean

__all__ = ["CLIENT_KEYS", "QHIVE_KEYS", "IronMQOptions", "check_options", "reservation_timeout"]

#: How the broker names itself in errors, and the setting its options come from.
PLUGIN = "IronMQ broker"
SETTING = "Q_CLUSTER['iron_mq']"

#: ``iron_core.IronClient``'s keyword arguments (what ``IronMQ(**IRON_MQ)`` passes on).
CLIENT_KEYS = ("token", "project_id", "host", "port", "protocol", "api_version",
               "config_file", "keystone", "cloud", "path_prefix")
#: qhive's own keys.
QHIVE_KEYS = ("request_timeout", "min_reservation_timeout")

#: IronMQ's reservation timeout: 30 s to 24 h (API reference, "Reserve Messages").
MIN_TIMEOUT, MAX_TIMEOUT = 30, 86_400
#: Seconds an HTTP request may take before the service counts as unreachable
#: (iron_core sets none: a server that stops answering would hang a call for ever).
DEFAULT_REQUEST_TIMEOUT = 10.0
KEYSTONE_KEYS = ("server", "tenant", "username", "password")


@dataclasses.dataclass(frozen=True)
class IronMQOptions:
    """Checked options: ``client`` for ``iron_mq.IronMQ``, and qhive's own."""

    client: Mapping[str, Any]
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    min_reservation_timeout: int = MIN_TIMEOUT

    def __repr__(self) -> str:  # never show the token or a keystone password
        shown = {k: ("********" if k in ("token", "keystone") else v)
                 for k, v in self.client.items()}
        return (f"IronMQOptions(client={shown!r}, request_timeout={self.request_timeout!r}, "
                f"min_reservation_timeout={self.min_reservation_timeout!r})")


def _error(message: str, key: str | None = None) -> ConfigError:
    where = f"iron_mq.{key}" if key else "iron_mq"
    return ConfigError(f"{PLUGIN}: {message}", key=where)


def setting(key: str) -> str:
    """``Q_CLUSTER['iron_mq']['token']``: how messages name one option."""
    return f"{SETTING}[{key!r}]"


def check_options(value: Any) -> IronMQOptions:
    """``value`` — None or a dict of the keys above — checked; else a ConfigError naming
    the key, with a did-you-mean for a misspelt one. Needs no network and no client."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _error(f"{SETTING} must be a dict of iron_mq.IronMQ options such as "
                     f"{{'token': '…', 'project_id': '…'}}, got {type(value).__name__}")
    accepted = (*CLIENT_KEYS, *QHIVE_KEYS)
    for key in value:
        if key not in accepted:
            raise _error(f"iron_mq.IronMQ takes no option {key!r} in {SETTING}"
                         + (did_you_mean(key, accepted) or f"; it takes: {', '.join(accepted)}"),
                         str(key))
    client = {k: v for k, v in value.items() if k in CLIENT_KEYS and v is not None}
    for key in ("token", "project_id", "host", "path_prefix", "cloud"):
        if key in client and (not isinstance(client[key], str) or
                              (key != "path_prefix" and not client[key].strip())):
            raise _error(f"{setting(key)} must be a non-empty string, got {client[key]!r}", key)
    if "port" in client:
        port = client["port"]
        if isinstance(port, str) and port.isdigit():
            client["port"] = port = int(port)
        if type(port) is not int or not 0 < port < 65536:
            raise _error(f"{setting('port')} must be a port number (1-65535), got {port!r}",
                         "port")
    if "protocol" in client and client["protocol"] not in ("http", "https"):
        raise _error(f"{setting('protocol')} must be 'https' or 'http', got "
                     f"{client['protocol']!r}", "protocol")
    if "api_version" in client:
        if str(client["api_version"]) != "3":
            raise _error(f"{setting('api_version')} is {client['api_version']!r}, but the broker "
                         f"speaks IronMQ's API v3 (reservations): leave it out or set 3",
                         "api_version")
        client["api_version"] = 3
    if "config_file" in client:
        path = client["config_file"]
        if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
            raise _error(f"{setting('config_file')} names {path!r}, which is not a file",
                         "config_file")
        client["config_file"] = os.fspath(path)
    if "keystone" in client:
        keystone = client["keystone"]
        missing = [k for k in KEYSTONE_KEYS
                   if not isinstance(keystone, Mapping) or k not in keystone]
        if missing:
            raise _error(f"{setting('keystone')} must be a dict with {', '.join(KEYSTONE_KEYS)}; "
                         f"missing: {', '.join(missing)}", "keystone")
        client["keystone"] = dict(keystone)
    request_timeout = value.get("request_timeout", DEFAULT_REQUEST_TIMEOUT)
    if (isinstance(request_timeout, bool) or not isinstance(request_timeout, (int, float))
            or not 0 < request_timeout < math.inf):
        raise _error(f"{setting('request_timeout')} must be a number of seconds > 0, got "
                     f"{request_timeout!r}", "request_timeout")
    floor = value.get("min_reservation_timeout", MIN_TIMEOUT)
    if type(floor) is not int or not 1 <= floor <= MAX_TIMEOUT:
        raise _error(f"{setting('min_reservation_timeout')} must be a whole number of seconds "
                     f"from 1 to {MAX_TIMEOUT}, got {floor!r}", "min_reservation_timeout")
    return IronMQOptions(client, float(request_timeout), floor)


def reservation_timeout(retry: float, floor: int = MIN_TIMEOUT) -> tuple[int, str | None]:
    """``(seconds, warning)``: the reservation timeout for ``Q_CLUSTER['retry']``.

    IronMQ takes whole seconds from 30 (``floor``) to 86,400: ``retry`` is rounded up,
    then raised or lowered into that range, and the warning says so (else None).
    """
    wanted = max(1, math.ceil(retry))
    seconds = min(MAX_TIMEOUT, max(floor, wanted))
    if seconds == wanted:
        return seconds, None
    if seconds > wanted:
        why = (f"IronMQ reserves a message for at least {floor} s "
               f"({setting('min_reservation_timeout')})")
    else:
        why = f"IronMQ reserves a message for at most {MAX_TIMEOUT} s (24 h)"
    return seconds, (f"{PLUGIN}: Q_CLUSTER['retry'] is {retry:g} s, but {why}: a task taken "
                     f"and not acknowledged comes back after {seconds} s")
