"""Redis clients from Django Q2's ``Q_CLUSTER["redis"]``: options checked, sane
timeouts, and addresses for messages that never show a password.

Used by ``qhive-broker-redis`` and ``qhive-store-redis``; ``plugin`` and ``source``
name, in every error, the plugin and the setting the options came from.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import redis
from qhive.errors import ConfigError, did_you_mean
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["CLIENT_DEFAULTS", "address", "check_options", "hide_password", "new_client"]

#: What a client gets unless the options say otherwise: a dead server is noticed
#: within seconds (redis-py's default retries a frozen server for about a minute).
CLIENT_DEFAULTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
#: Django Q2's documented ``Q_CLUSTER["redis"]`` keys that redis-py renamed.
RENAMED_OPTIONS = {"charset": "encoding", "errors": "encoding_errors"}
URL_SCHEMES = ("redis", "rediss", "unix")


def check_options(value: Any, *, plugin: str, source: str = "Q_CLUSTER['redis']",
                  ) -> dict[str, Any] | str | None:
    """``value`` — None, a Redis URL or a dict of ``redis.Redis`` keyword arguments —
    checked, with Django Q2's renamed keys mapped; else a ConfigError naming ``plugin``
    and ``source``, with a did-you-mean for a misspelt option."""
    if value is None:
        return None
    if isinstance(value, str):
        if urlsplit(value).scheme not in URL_SCHEMES:
            raise ConfigError(f"{plugin}: {source} = {hide_password(value)!r} is not a Redis "
                              f"URL; write redis://host:6379/0, rediss://… or "
                              f"unix:///path/to/redis.sock", key="redis")
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{plugin}: {source} must be a dict of redis.Redis options or a URL "
                          f"such as 'redis://127.0.0.1:6379/0', got {type(value).__name__}",
                          key="redis")
    options = {RENAMED_OPTIONS.get(key, key): option for key, option in value.items()}
    accepted = [p for p in inspect.signature(redis.Redis).parameters if p != "self"]
    for key in options:
        if key not in accepted:
            raise ConfigError(f"{plugin}: redis.Redis takes no option {key!r} in {source}"
                              + did_you_mean(key, accepted), key=f"redis.{key}")
    if options.get("decode_responses"):
        raise ConfigError(f"{plugin}: decode_responses must be False in {source}: qhive "
                          f"stores bytes", key="redis.decode_responses")
    return options


def new_client(options: dict[str, Any] | str | None, *, plugin: str,
               source: str = "Q_CLUSTER['redis']") -> redis.Redis:
    """A client for checked ``options`` (None: 127.0.0.1:6379/0). It connects when
    first used; a broken connection is retried once, at once, instead of redis-py's
    back-off (the callers back off themselves)."""
    defaults = {**CLIENT_DEFAULTS,
                "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))}
    try:
        if isinstance(options, str):
            return redis.Redis.from_url(options, **defaults)
        return redis.Redis(**{**defaults, "host": "127.0.0.1", **(options or {})})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{plugin}: the Redis options of {source} are not usable: {exc}",
                          key="redis") from exc


def address(client: redis.Redis) -> str:
    """host:port/db (or the socket path) a client talks to; never a password."""
    kwargs = client.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}/{db}"
    return f"{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{db}"


def hide_password(url: str) -> str:
    """``url`` with its password masked."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
    except ValueError:
        return "an unparsable URL"
