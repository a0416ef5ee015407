"""The client helpers on their own: options checked, clients built, addresses shown.

The broker's and the store's tests check the same through their plugin (the plugin's
name in each error); here ``plugin`` and ``source`` are the helpers' arguments. Only
the last test talks to a server (the shared Redis of ``qhive_testkit.services``).
"""

from __future__ import annotations

import pytest
import redis
from qhive.errors import ConfigError
from qhive_redis_client.client import (
    CLIENT_DEFAULTS,
    address,
    check_options,
    hide_password,
    new_client,
)
from qhive_testkit.services import redis_address, redis_options, redis_url, require

PLUGIN = "test-plugin"


# -- check_options


@pytest.mark.parametrize("value", [None, "redis://h:6379/0", "rediss://:pw@h/1",
                                   "unix:///run/redis.sock?db=2"])
def test_none_and_redis_urls_pass_unchanged(value):
    assert check_options(value, plugin=PLUGIN) == value


def test_a_dict_passes_with_django_q2s_renamed_keys_mapped():
    options = {"host": "h", "db": 2, "charset": "utf-8", "errors": "strict"}
    assert check_options(options, plugin=PLUGIN) == {
        "host": "h", "db": 2, "encoding": "utf-8", "encoding_errors": "strict"}


@pytest.mark.parametrize(("value", "key", "message"), [
    (6379, "redis", r"must be a dict of redis.Redis options or a URL .*got int"),
    (["127.0.0.1"], "redis", r"got list"),
    ("", "redis", r"is not a Redis URL; write redis://"),
    ("http://127.0.0.1:6379", "redis", r"is not a Redis URL"),
    ({"hots": "h"}, "redis.hots", r"takes no option 'hots' in the-source — did you mean 'host'\?"),
    ({"zzz": 1}, "redis.zzz", r"takes no option 'zzz' in the-source$"),
    ({"decode_responses": True}, "redis.decode_responses", r"must be False .*stores bytes"),
])
def test_bad_options_name_the_plugin_the_source_and_the_key(value, key, message):
    with pytest.raises(ConfigError, match=rf"^{PLUGIN}: .*{message}") as raised:
        check_options(value, plugin=PLUGIN, source="the-source")
    assert raised.value.key == key


def test_the_source_defaults_to_q_cluster_redis():
    with pytest.raises(ConfigError, match=r"must be a dict .*") as raised:
        check_options(6379, plugin=PLUGIN)
    assert "Q_CLUSTER['redis']" in str(raised.value)


def test_a_bad_url_is_shown_without_its_password():
    with pytest.raises(ConfigError, match=r"'http://user:\*\*\*@h:6379'") as raised:
        check_options("http://user:s3cret@h:6379", plugin=PLUGIN)
    assert "s3cret" not in str(raised.value)


# -- new_client


def test_a_client_gets_the_defaults_and_connects_only_when_used():
    client = new_client(None, plugin=PLUGIN)  # nothing listens? no matter: not connected
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6379, 0)
    assert {k: kwargs[k] for k in CLIENT_DEFAULTS} == CLIENT_DEFAULTS
    client.close()


@pytest.mark.parametrize("options", [{"host": "h", "port": 7000, "socket_timeout": 1.5},
                                     "redis://h:7000/0?socket_timeout=1.5"])
def test_the_options_win_over_the_defaults(options):
    kwargs = new_client(options, plugin=PLUGIN).connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"]) == ("h", 7000)
    assert kwargs["socket_timeout"] == 1.5
    assert kwargs["socket_connect_timeout"] == CLIENT_DEFAULTS["socket_connect_timeout"]


def test_a_broken_connection_is_retried_once_at_once_and_a_timeout_not():
    retry = new_client(None, plugin=PLUGIN).get_retry()
    for error, tries in [(redis.ConnectionError, 2), (redis.TimeoutError, 1)]:
        calls = []

        def fail(error=error, calls=calls):
            calls.append(error)
            raise error("down")

        with pytest.raises(error):
            retry.call_with_retry(fail, lambda exc: None)
        assert len(calls) == tries, error


def test_unusable_options_are_config_errors():
    with pytest.raises(ConfigError, match=rf"^{PLUGIN}: the Redis options of the-source are "
                                          r"not usable: .*'x'") as raised:
        new_client("redis://h:x/0", plugin=PLUGIN, source="the-source")
    assert raised.value.key == "redis"


# -- address, hide_password


@pytest.mark.parametrize(("options", "shown"), [
    (None, "127.0.0.1:6379/0"),
    ({"host": "h", "port": 7000, "db": 3, "password": "s3cret"}, "h:7000/3"),
    ("redis://user:s3cret@h:7000/3", "h:7000/3"),
    ("unix://:s3cret@/run/redis.sock?db=2", "unix:/run/redis.sock/2"),
])
def test_the_address_is_host_port_db_or_the_socket_never_the_password(options, shown):
    assert address(new_client(options, plugin=PLUGIN)) == shown


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://user:s3cret@h:6379/0", "redis://user:***@h:6379/0"),
    ("redis://:s3cret@h/0", "redis://:***@h/0"),
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("redis://:s3cret@[h:6379/0", "an unparsable URL"),
])
def test_hide_password(url, shown):
    assert hide_password(url) == shown


# -- on the shared Redis


@pytest.mark.parametrize("how", ["dict", "url"])
def test_a_client_talks_to_the_server_its_options_name(how):
    require("redis")
    options = redis_options() if how == "dict" else redis_url()
    client = new_client(check_options(options, plugin=PLUGIN), plugin=PLUGIN)
    try:
        assert client.ping() is True
        assert address(client) == redis_address()
    finally:
        client.close()
