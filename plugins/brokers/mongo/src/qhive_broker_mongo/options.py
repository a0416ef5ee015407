"""``Q_CLUSTER["mongo"]`` and ``Q_CLUSTER["mongo_db"]``: checked, completed with the
broker's defaults, and described for messages without credentials.

``mongo`` holds :class:`pymongo.MongoClient`'s keyword arguments, as in Django Q2; a
``mongodb://`` or ``mongodb+srv://`` URI goes in ``host``. Names are checked against
pymongo's own table of options, case-insensitively as pymongo reads them, so that a typo
is one line with a suggestion in pymongo's spelling. Values are pymongo's to check: the
broker builds its client, without connecting, when it is built.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from pymongo import MongoClient
from pymongo.common import VALIDATORS
from qhive.config.frozen import thaw
from qhive.errors import ConfigError, did_you_mean

__all__ = ["DEFAULTS", "DEFAULT_DATABASE", "PLUGIN", "address", "check_collection",
           "check_database", "client_options", "server_selection_timeout"]

#: How the broker names itself in errors.
PLUGIN = "MongoDB broker"
#: Django Q2's database when neither ``mongo_db`` nor the URI names one.
DEFAULT_DATABASE = "django-q"
#: Unless the settings set them (as keywords or as URI options): an unreachable server is
#: an error after 5 s instead of pymongo's 30 s, so the cluster logs the outage and backs
#: off early; a server that stops answering mid-call is one after 30 s instead of never.
DEFAULTS: Mapping[str, Any] = {"serverSelectionTimeoutMS": 5000, "socketTimeoutMS": 30000}

# Characters MongoDB refuses in a database name (Unix and Windows rules together).
_BAD_DATABASE_CHARS = set('/\\. "$*<>:|?\0')
# MongoDB's limits: a database name, and "<database>.<collection>", in bytes.
_MAX_DATABASE_NAME = 63
_MAX_NAMESPACE = 255


@functools.cache
def known_options() -> dict[str, str]:
    """pymongo's option names, lower-cased → as its documentation spells them."""
    names = {name.lower(): name for name in (*VALIDATORS, "host", "port")}
    documented = re.findall(r"^\s*- `(\w+)`", MongoClient.__init__.__doc__ or "", re.M)
    names.update({name.lower(): name for name in documented if name.lower() in names})
    return names


def client_options(mongo: Any) -> dict[str, Any]:
    """``MongoClient`` keyword arguments for ``Q_CLUSTER['mongo']`` (a mapping, or a URI
    string), with :data:`DEFAULTS` where neither a keyword nor a URI option sets them."""
    if mongo is None:
        mongo = {}
    elif isinstance(mongo, str):
        mongo = {"host": mongo}
    elif not isinstance(mongo, Mapping):
        raise ConfigError(f"{PLUGIN}: Q_CLUSTER['mongo'] must be a dict of pymongo.MongoClient "
                          f"options (a mongodb:// URI goes in 'host'), got "
                          f"{type(mongo).__name__}", key="mongo")
    known = known_options()
    for name in mongo:
        if not isinstance(name, str) or name.lower() not in known:
            raise ConfigError(_unknown(name, known), key="mongo")
    given = {name.lower() for name in mongo} | _uri_option_names(mongo.get("host"))
    options = {k: v for k, v in DEFAULTS.items() if k.lower() not in given}
    # Config freezes settings (dicts to FrozenMap, lists to tuples); pymongo wants them plain.
    options.update({name: thaw(value) for name, value in mongo.items()})
    if "connect" not in given:
        options["connect"] = False  # no threads or sockets until first used (fork-safe)
    return options


def _unknown(name: Any, known: Mapping[str, str]) -> str:
    return (f"{PLUGIN}: pymongo.MongoClient takes no option {name!r} in Q_CLUSTER['mongo']"
            f"{did_you_mean(name, known.values())} (it takes MongoClient's keyword arguments; "
            f"a mongodb:// URI goes in 'host')")


def _uri_option_names(host: Any) -> set[str]:
    hosts = [host] if isinstance(host, str) else list(host or ())
    names: set[str] = set()
    for uri in hosts:
        if isinstance(uri, str) and "://" in uri and "?" in uri:
            names.update(k.lower() for k, _ in parse_qsl(uri.split("?", 1)[1]))
    return names


def address(options: Mapping[str, Any]) -> str:
    """``host:port`` of the server(s) the options name, for messages: never credentials."""
    host = options.get("host") or "localhost"
    port = options.get("port") or 27017
    found = []
    for item in [host] if isinstance(host, str) else list(host):
        item = str(item)
        if "://" in item:
            rest = item.split("://", 1)[1].rsplit("@", 1)[-1]  # user:password@ stays out
            found.append(re.split(r"[/?]", rest, maxsplit=1)[0])
        else:
            found.append(item if ":" in item else f"{item}:{port}")
    return ",".join(found)


def server_selection_timeout(client: Any) -> float | None:
    """The client's server selection timeout in seconds (None when it has none)."""
    options = getattr(client, "options", None)
    return getattr(options, "server_selection_timeout", None)


def check_database(name: Any) -> str:
    if (not isinstance(name, str) or not name or len(name) > _MAX_DATABASE_NAME
            or _BAD_DATABASE_CHARS & set(name)):
        raise ConfigError(
            f"{PLUGIN}: Q_CLUSTER['mongo_db'] must be a MongoDB database name (1 to "
            f"{_MAX_DATABASE_NAME} characters, none of / \\ . space \" $ * < > : | ?), got "
            f"{name!r}", key="mongo_db")
    return name


def check_collection(queue: Any, prefix: str, database: str) -> str:
    """The collection of ``queue``: ``prefix + queue``, if MongoDB takes that name."""
    if not isinstance(queue, str) or not queue:
        raise ConfigError(f"{PLUGIN}: the queue name must be a non-empty string, got {queue!r}",
                          key="name")
    name = prefix + queue
    if "$" in name or "\0" in name or len(f"{database}.{name}".encode()) > _MAX_NAMESPACE:
        raise ConfigError(
            f"{PLUGIN}: the queue {queue!r} cannot be a MongoDB collection ({name!r} in "
            f"database {database!r}: no '$', and at most {_MAX_NAMESPACE} bytes with the "
            f"database name); choose another cluster name", key="name")
    return name
