"""qhive.config: parsing Q_CLUSTER into an immutable, picklable Config."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import pickle
import subprocess
import sys

import pytest
from qhive.config import LEGACY_BROKER_KEYS, SETTINGS, Config, FrozenMap
from qhive.errors import ConfigError

# The configuration example of the Django Q2 docs.
SEED_EXAMPLE = {
    "name": "myproject",
    "workers": 8,
    "recycle": 500,
    "timeout": 60,
    "compress": True,
    "save_limit": 250,
    "queue_limit": 500,
    "cpu_affinity": 1,
    "label": "Django Q2",
    "redis": {"host": "127.0.0.1", "port": 6379, "db": 0},
    "ALT_CLUSTERS": {
        "long": {"timeout": 3000, "retry": 3600, "max_attempts": 2},
        "short": {"timeout": 10, "max_attempts": 1},
    },
}


@pytest.fixture(autouse=True)
def _no_cluster_env(monkeypatch):
    monkeypatch.delenv("Q_CLUSTER_NAME", raising=False)


def parse_error(q_cluster, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Config.from_dict(q_cluster, **kwargs)
    return info.value


# --------------------------------------------------------------------------- defaults

DEFAULTS = [
    # Django Q2 keys (reference §4), with Django Q2's defaults
    ("name", "default"),
    ("cluster_name", "default"),
    ("label", "Django Q"),
    ("daemonize_workers", True),
    ("recycle", 500),
    ("max_rss", None),
    ("timeout", None),
    ("guard_cycle", 0.5),
    ("cpu_affinity", 0),
    ("scheduler", True),
    ("catch_up", True),
    ("time_zone", None),
    ("retry", 60),
    ("max_attempts", 0),
    ("ack_failures", False),
    ("bulk", 1),
    ("poll", 0.2),
    ("compress", False),
    ("sync", False),
    ("testing", False),
    ("save_limit", 250),
    ("save_limit_per", None),
    ("cache", "default"),
    ("cached", False),
    ("log_level", "INFO"),
    ("error_reporter", {}),
    ("mongo_db", None),
    # legacy broker keys: none set (qhive's default broker is the ORM, not Redis)
    ("broker_class", None),
    ("iron_mq", None),
    ("sqs", None),
    ("orm", None),
    ("mongo", None),
    ("disque_nodes", None),
    ("disque_auth", None),
    ("disque_fastack", False),
    ("django_redis", None),
    ("redis", None),
    ("rollbar", None),
    ("alt_clusters", {}),
    # qhive's own keys
    ("broker", "orm"),
    ("broker_options", {}),
    ("broker_selected_by", "default"),
    ("result_store", "orm"),
    ("result_store_options", {}),
    ("serializer", "pickle"),
    ("signer", "hmac"),
    ("plugins", {"disabled": (), "strict": False, "trace": False}),
    ("scheduler_interval", 30),
    # not from Q_CLUSTER
    ("secret_key", None),
    ("secret_key_fallbacks", ()),
]


@pytest.mark.parametrize("make", [Config, Config.from_dict, lambda: Config.from_dict({})],
                         ids=["Config()", "from_dict()", "from_dict({})"])
@pytest.mark.parametrize(("attr", "expected"), DEFAULTS, ids=[a for a, _ in DEFAULTS])
def test_default(make, attr, expected):
    value = getattr(make(), attr)
    assert value == expected
    assert type(value) is type(expected) or isinstance(value, FrozenMap)


def test_default_workers_is_the_cpu_count():
    assert Config().workers == (os.cpu_count() or 4)
    assert Config.from_dict({}).workers == (os.cpu_count() or 4)


def test_default_queue_limit_is_50_per_worker():
    assert Config().queue_limit == Config().workers * 50
    assert Config.from_dict({"workers": 3}).queue_limit == 150
    assert Config(workers=5).queue_limit == 250


def test_every_key_has_a_default_test():
    keys = {key for key in SETTINGS}
    tested = {attr for attr, _ in DEFAULTS} | {"workers", "queue_limit"}
    assert {s.attr for s in SETTINGS.values()} <= tested
    assert "ALT_CLUSTERS" in keys and "alt_clusters" not in keys


def test_no_arguments_equals_empty_dict():
    assert Config() == Config.from_dict({}) == Config.from_dict(None)


def test_settings_table_describes_every_key():
    for key, setting in SETTINGS.items():
        assert setting.key == key
        assert setting.doc and setting.expected, key


# --------------------------------------------------------------------------- values


def test_seed_example_parses():
    config = Config.from_dict(SEED_EXAMPLE)
    assert config.name == "myproject"
    assert config.workers == 8
    assert config.queue_limit == 500
    assert config.label == "Django Q2"
    assert config.redis == {"host": "127.0.0.1", "port": 6379, "db": 0}
    assert config.broker == "redis"


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("timeout", 2.5, 2.5),
    ("timeout", 30, 30),
    ("retry", 0.5, 0.5),
    ("recycle", 0, 0),
    ("save_limit", -1, -1),
    ("save_limit", 0, 0),
    ("save_limit_per", "group", "group"),
    ("queue_limit", None, None),
    ("queue_limit", 0, None),  # Django Q2: falsy means unbounded
    ("queue_limit", 7, 7),
    ("cached", True, True),
    ("cached", 60, 60),
    ("log_level", "debug", "DEBUG"),
    ("log_level", logging.WARNING, "WARNING"),
    ("time_zone", "Europe/Paris", "Europe/Paris"),
    ("max_rss", 200_000, 200_000),
    ("guard_cycle", 59.9, 59.9),
    ("disque_nodes", ["127.0.0.1:7711"], ("127.0.0.1:7711",)),
    ("plugins", {"disabled": ["qhive-otel"]},
     {"disabled": ("qhive-otel",), "strict": False, "trace": False}),
    ("plugins", {"strict": True, "trace": True}, {"disabled": (), "strict": True, "trace": True}),
    ("redis", "redis://localhost:6379/0", "redis://localhost:6379/0"),
])
def test_accepted_values(key, value, expected):
    assert getattr(Config.from_dict({key: value}), key) == expected


def test_time_zone_fallback():
    assert Config.from_dict({}, time_zone="Europe/Paris").time_zone == "Europe/Paris"
    assert Config.from_dict({"time_zone": "UTC"}, time_zone="Europe/Paris").time_zone == "UTC"
    assert Config.from_dict({"time_zone": None}, time_zone="Europe/Paris").time_zone is None
    error = parse_error({}, time_zone="Mars/Olympus_Mons")
    assert error.key == "TIME_ZONE"
    assert "'Mars/Olympus_Mons'" in str(error)


def test_legacy_rollbar_key_becomes_an_error_reporter():
    config = Config.from_dict({"rollbar": {"access_token": "t", "environment": "prod"}})
    assert config.error_reporter == {"rollbar": {"access_token": "t", "environment": "prod"}}
    both = Config.from_dict({"rollbar": {"access_token": "old"},
                             "error_reporter": {"rollbar": {"access_token": "new"}}})
    assert both.error_reporter == {"rollbar": {"access_token": "new"}}


def test_direct_construction_validates_and_derives():
    config = Config(workers=2, redis="redis://localhost")
    assert config.queue_limit == 100
    assert config.broker == "redis"
    assert config.broker_selected_by == "redis"
    with pytest.raises(ConfigError) as info:
        Config(workers="2")
    assert info.value.key == "workers"


def test_secrets_are_kept_compared_and_not_shown():
    config = Config.from_dict({}, secret_key="s3cr3t-key", secret_key_fallbacks=["old-key"])
    assert config.secret_key == "s3cr3t-key"
    assert config.secret_key_fallbacks == ("old-key",)
    assert "s3cr3t-key" not in repr(config) and "old-key" not in repr(config)
    assert config != Config.from_dict({}, secret_key="other")
    assert Config.from_dict({}, secret_key=b"bytes").secret_key == b"bytes"


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"secret_key": 12345}, "SECRET_KEY"),
    ({"secret_key_fallbacks": "one-string"}, "SECRET_KEY_FALLBACKS"),
    ({"secret_key_fallbacks": [b"ok", 12345]}, "SECRET_KEY_FALLBACKS"),
])
def test_bad_secret_keys(kwargs, key):
    error = parse_error({}, **kwargs)
    assert error.key == key
    assert "12345" not in str(error)


# --------------------------------------------------------------------------- broker resolution


def test_legacy_broker_keys_follow_django_q2_priority():
    assert list(LEGACY_BROKER_KEYS) == [
        "broker_class", "iron_mq", "sqs", "orm", "mongo", "disque_nodes", "django_redis", "redis",
    ]


@pytest.mark.parametrize(("key", "value", "broker", "options"), [
    ("broker_class", "myapp.brokers.Custom", "myapp.brokers.Custom", {}),  # see drivers
    ("iron_mq", {"token": "t", "project_id": "p"}, "ironmq",
     {"iron_mq": {"token": "t", "project_id": "p"}}),
    ("sqs", {"aws_region": "us-east-1"}, "sqs", {"sqs": {"aws_region": "us-east-1"}}),
    ("orm", "default", "orm", {"orm": "default"}),
    ("mongo", {"host": "127.0.0.1", "port": 27017}, "mongo",
     {"mongo": {"host": "127.0.0.1", "port": 27017}}),
    ("disque_nodes", ["127.0.0.1:7711"], "disque", {"disque_nodes": ("127.0.0.1:7711",)}),
    ("django_redis", "default", "redis", {"django_redis": "default"}),
    ("redis", {"host": "127.0.0.1"}, "redis", {"redis": {"host": "127.0.0.1"}}),
    ("redis", "redis://h:6379/0", "redis", {"redis": "redis://h:6379/0"}),
])
def test_each_legacy_key_selects_its_broker(key, value, broker, options):
    config = Config.from_dict({key: value})
    assert config.broker == broker
    assert config.broker_options == options
    assert config.broker_selected_by == key


def test_legacy_priority_order():
    every = {
        "broker_class": "myapp.brokers.Custom",
        "iron_mq": {"token": "t"},
        "sqs": {"aws_region": "us-east-1"},
        "orm": "default",
        "mongo": {"host": "m"},
        "disque_nodes": ["d:7711"],
        "django_redis": "default",
        "redis": {"host": "r"},
    }
    order = list(every)
    for i, key in enumerate(order):
        present = {k: every[k] for k in order[i:]}
        assert Config.from_dict(present).broker_selected_by == key


def test_companion_keys_go_with_their_broker():
    mongo = Config.from_dict({"mongo": {"host": "m"}, "mongo_db": "queues"})
    assert mongo.broker_options == {"mongo": {"host": "m"}, "mongo_db": "queues"}
    both_redis = Config.from_dict({"redis": {"host": "r"}, "django_redis": "default"})
    assert both_redis.broker_selected_by == "django_redis"
    assert both_redis.broker_options == {"django_redis": "default", "redis": {"host": "r"}}
    disque = Config.from_dict({"disque_nodes": ["d:1"], "disque_auth": "pw"})
    assert disque.broker_options == {"disque_nodes": ("d:1",), "disque_auth": "pw"}
    # mongo_db alone selects nothing
    assert Config.from_dict({"mongo_db": "queues"}).broker_options == {}


def test_none_legacy_value_selects_nothing():
    config = Config.from_dict({"redis": None, "orm": None})
    assert (config.broker, config.broker_selected_by) == ("orm", "default")


def test_default_broker_is_orm():
    config = Config.from_dict({"workers": 2})
    assert (config.broker, config.broker_options, config.broker_selected_by) == (
        "orm", {}, "default")


def test_explicit_broker_wins_over_legacy_keys():
    config = Config.from_dict({"broker": "sqs", "redis": {"host": "r"}, "orm": "default"})
    assert config.broker == "sqs"
    assert config.broker_options == {}
    assert config.broker_selected_by == "broker"
    assert config.redis == {"host": "r"}  # still there for whoever else reads it


def test_explicit_broker_options_merge_over_legacy_options():
    config = Config.from_dict({"orm": "default", "broker_options": {"orm": "queues", "x": 1}})
    assert config.broker == "orm"
    assert config.broker_options == {"orm": "queues", "x": 1}
    assert config.broker_selected_by == "orm"


def test_explicit_broker_takes_the_options_of_its_own_legacy_key():
    config = Config.from_dict({"broker": "redis", "redis": "redis://h",
                               "broker_options": {"socket_timeout": 5}})
    assert config.broker_options == {"redis": "redis://h", "socket_timeout": 5}
    assert config.broker_selected_by == "broker"


@pytest.mark.parametrize("broker", ["redsi", "memory", "my-broker", "pkg.mod:Class",
                                    "pkg.mod.Class"])
def test_broker_names_are_not_looked_up_here(broker):
    assert Config.from_dict({"broker": broker}).broker == broker


# --------------------------------------------------------------------------- errors


def test_error_message_names_key_expectation_and_value():
    error = parse_error({"workers": "four"})
    assert str(error) == "Q_CLUSTER['workers'] must be an int >= 1, got 'four' (str)"
    assert error.key == "workers"
    assert isinstance(error, ValueError)


def test_unknown_key_suggests_the_close_one():
    error = parse_error({"timout": 30})
    assert "did you mean 'timeout'" in str(error)
    assert "unknown Q_CLUSTER key 'timout'" in str(error)
    assert error.key == "timout"


def test_unknown_key_suggestion_ignores_case():
    assert "did you mean 'timeout'" in str(parse_error({"TIMEOUT": 30}))
    assert "did you mean 'ALT_CLUSTERS'" in str(parse_error({"alt_clusters": {}}))


def test_unknown_key_without_a_close_match():
    error = parse_error({"frobnicate": 1})
    assert "did you mean" not in str(error)
    assert "configuration docs" in str(error)


def test_removed_key_says_why():
    assert "removed in Django Q2" in str(parse_error({"has_replica": True}))


def test_non_string_key():
    assert "keys must be strings" in str(parse_error({1: 2}))


def test_q_cluster_must_be_a_mapping():
    error = parse_error(["workers", 4])
    assert error.key == "Q_CLUSTER"
    assert "must be a dict" in str(error)


@pytest.mark.parametrize(("q_cluster", "key", "expected"), [
    ({"workers": True}, "workers", "an int >= 1"),
    ({"workers": 2.0}, "workers", "an int >= 1"),
    ({"workers": 0}, "workers", "an int >= 1"),
    ({"recycle": -1}, "recycle", "an int >= 0"),
    ({"max_rss": 0}, "max_rss", "an int >= 1 or None"),
    ({"timeout": 0}, "timeout", "a number > 0 or None"),
    ({"timeout": "60"}, "timeout", "a number > 0 or None"),
    ({"timeout": True}, "timeout", "a number > 0 or None"),
    ({"timeout": float("inf")}, "timeout", "a number > 0 or None"),
    ({"retry": 0}, "retry", "a number > 0"),
    ({"max_attempts": -1}, "max_attempts", "an int >= 0"),
    ({"save_limit": -2}, "save_limit", "an int >= -1"),
    ({"save_limit_per": "user"}, "save_limit_per", "one of 'group', 'name', 'func' or None"),
    ({"guard_cycle": 0}, "guard_cycle", "a number > 0 and < 60"),
    ({"guard_cycle": 60}, "guard_cycle", "a number > 0 and < 60"),
    ({"sync": "yes"}, "sync", "True or False"),
    ({"sync": 1}, "sync", "True or False"),
    ({"compress": "true"}, "compress", "True or False"),
    ({"queue_limit": 2.5}, "queue_limit", "an int >= 1 or None"),
    ({"bulk": 0}, "bulk", "an int >= 1"),
    ({"poll": -1}, "poll", "a number > 0"),
    ({"cpu_affinity": -1}, "cpu_affinity", "an int >= 0"),
    ({"cached": 0}, "cached", "True, False or an int number of seconds > 0"),
    ({"cached": "yes"}, "cached", "True, False or an int number of seconds > 0"),
    ({"log_level": "LOUD"}, "log_level", "a logging level name"),
    ({"time_zone": "Mars/Olympus_Mons"}, "time_zone", "a time zone name"),
    ({"label": 5}, "label", "a non-empty string"),
    ({"name": ""}, "name", "a non-empty string"),
    ({"cache": None}, "cache", "a non-empty string"),
    ({"orm": 5}, "orm", "a non-empty string or None"),
    ({"sqs": "us-east-1"}, "sqs", "a mapping or None"),
    ({"redis": 6379}, "redis", "a mapping, a URL string or None"),
    ({"disque_nodes": "h:7711"}, "disque_nodes", "a list of strings or None"),
    ({"broker_class": "Custom"}, "broker_class", "a dotted path"),
    ({"broker": 5}, "broker", "a driver name or a dotted path"),
    ({"broker": "not a name"}, "broker", "a driver name or a dotted path"),
    ({"broker_options": ["x"]}, "broker_options", "a mapping"),
    ({"serializer": ""}, "serializer", "a driver name or a dotted path"),
    ({"error_reporter": {"sentry": "https://dsn"}}, "error_reporter.sentry", "a mapping"),
    ({"error_reporter": ["sentry"]}, "error_reporter", "a mapping"),
    ({"plugins": {"disabled": "qhive-otel"}}, "plugins.disabled", "a list of strings"),
    ({"plugins": {"strict": "yes"}}, "plugins.strict", "True or False"),
    ({"ALT_CLUSTERS": {"long": {"workers": "x"}}}, "ALT_CLUSTERS.long.workers", "an int >= 1"),
    ({"ALT_CLUSTERS": {"long": {"timeout": -5}}}, "ALT_CLUSTERS.long.timeout", "a number > 0"),
    ({"ALT_CLUSTERS": {"long": 5}}, "ALT_CLUSTERS.long", "a mapping of settings"),
    ({"ALT_CLUSTERS": ["long"]}, "ALT_CLUSTERS", "a mapping"),
])
def test_wrong_values_name_the_key(q_cluster, key, expected):
    error = parse_error(q_cluster)
    assert error.key == key
    message = str(error)
    assert f"must be {expected}" in message
    root, *parts = key.split(".")
    if root != "ALT_CLUSTERS":
        root, parts = "Q_CLUSTER", [root, *parts]
    assert message.startswith(root + "".join(f"[{part!r}]" for part in parts) + " ")


def test_nested_unknown_keys_name_their_path():
    error = parse_error({"ALT_CLUSTERS": {"long": {"timout": 3000}}})
    assert "ALT_CLUSTERS['long']['timout']" in str(error)
    assert "did you mean 'timeout'" in str(error)
    assert error.key == "ALT_CLUSTERS.long.timout"
    error = parse_error({"plugins": {"strikt": True}})
    assert "did you mean 'strict'" in str(error)
    assert error.key == "plugins.strikt"


@pytest.mark.parametrize("key", ["name", "cluster_name", "ALT_CLUSTERS"])
def test_alt_cluster_cannot_change_identity(key):
    error = parse_error({"ALT_CLUSTERS": {"long": {key: "x"}}})
    assert error.key == f"ALT_CLUSTERS.long.{key}"
    assert "cannot be set per cluster" in str(error)


def test_alt_cluster_name_error_says_why():
    assert "signing salt" in str(parse_error({"ALT_CLUSTERS": {"long": {"name": "x"}}}))


def test_error_messages_do_not_leak_secrets():
    assert "hunter2" not in str(parse_error({"disque_auth": ["hunter2"]}))
    message = str(parse_error({"redis": ["redis://:hunter2@host:6379"]}))
    assert "hunter2" not in message and "host:6379" in message


def test_check_lists_every_problem():
    problems = Config.check({"workers": 0, "bulk": "x", "timout": 1})
    assert [p.key for p in problems] == ["workers", "bulk", "timout"]
    assert Config.check(SEED_EXAMPLE) == []


# --------------------------------------------------------------------------- ALT_CLUSTERS


def test_alt_cluster_overrides_root_keys():
    config = Config.from_dict(SEED_EXAMPLE, cluster="long")
    assert config.cluster_name == "long"
    assert config.queue == "long"
    assert config.name == "myproject"  # the signing salt stays the project's
    assert (config.timeout, config.retry, config.max_attempts) == (3000, 3600, 2)
    assert (config.workers, config.compress, config.cpu_affinity) == (8, True, 1)
    assert config.broker == "redis"
    short = Config.from_dict(SEED_EXAMPLE, cluster="short")
    assert (short.timeout, short.retry, short.max_attempts) == (10, 60, 1)


def test_root_cluster():
    root = Config.from_dict(SEED_EXAMPLE)
    assert root.cluster_name == "myproject" and root.timeout == 60
    assert Config.from_dict(SEED_EXAMPLE, cluster="myproject") == root
    assert root.alt_cluster_names == ("long", "short")
    assert root.alt_clusters["long"] == {"timeout": 3000, "retry": 3600, "max_attempts": 2}


def test_root_cluster_name_key():
    config = Config.from_dict({"name": "proj", "cluster_name": "web"})
    assert (config.name, config.cluster_name) == ("proj", "web")
    assert Config.from_dict({"name": "proj", "cluster_name": "web"}, cluster="web") == config


def test_derived_defaults_follow_the_merged_values():
    q_cluster = {"workers": 2, "ALT_CLUSTERS": {"big": {"workers": 3}}}
    assert Config.from_dict(q_cluster).queue_limit == 100
    assert Config.from_dict(q_cluster, cluster="big").queue_limit == 150
    fixed = {"workers": 2, "queue_limit": 5, "ALT_CLUSTERS": {"big": {"workers": 3}}}
    assert Config.from_dict(fixed, cluster="big").queue_limit == 5


def test_alt_cluster_can_choose_its_own_broker():
    q_cluster = {"redis": {"host": "r"}, "ALT_CLUSTERS": {"db": {"orm": "default"},
                                                         "sqs": {"broker": "sqs"}}}
    assert Config.from_dict(q_cluster).broker == "redis"
    assert Config.from_dict(q_cluster, cluster="db").broker_options == {"orm": "default"}
    assert Config.from_dict(q_cluster, cluster="sqs").broker == "sqs"


def test_unknown_cluster_lists_the_known_ones():
    error = parse_error(SEED_EXAMPLE, cluster="medium")
    assert "'medium'" in str(error)
    assert "'myproject', 'long', 'short'" in str(error)


def test_unknown_cluster_without_alt_clusters_is_a_config_error():
    # Django Q2 raised KeyError here.
    error = parse_error({"name": "proj"}, cluster="other")
    assert "known clusters: 'proj'" in str(error)


def test_every_alt_cluster_is_checked_whichever_is_selected():
    error = parse_error({"ALT_CLUSTERS": {"a": {}, "b": {"bulk": 0}}}, cluster="a")
    assert error.key == "ALT_CLUSTERS.b.bulk"


def test_cluster_from_environment(monkeypatch):
    monkeypatch.setenv("Q_CLUSTER_NAME", "long")
    assert Config.from_dict(SEED_EXAMPLE).cluster_name == "long"
    assert Config.from_dict(SEED_EXAMPLE).timeout == 3000
    assert Config.from_dict(SEED_EXAMPLE, cluster="short").cluster_name == "short"
    monkeypatch.setenv("Q_CLUSTER_NAME", "nope")
    assert "Q_CLUSTER_NAME" in str(parse_error(SEED_EXAMPLE))


def test_environment_naming_the_root_cluster(monkeypatch):
    monkeypatch.setenv("Q_CLUSTER_NAME", "myproject")
    config = Config.from_dict(SEED_EXAMPLE)
    assert config.cluster_name == "myproject" and config.timeout == 60


# --------------------------------------------------------------------------- immutability


def test_config_cannot_be_assigned():
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 3  # type: ignore[misc]


def test_mapping_fields_are_read_only():
    config = Config.from_dict(SEED_EXAMPLE)
    with pytest.raises(TypeError):
        config.redis["host"] = "elsewhere"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.alt_clusters["long"]["timeout"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        config.redis._data = {}  # type: ignore[union-attr]


def test_mutating_the_source_afterwards_changes_nothing():
    source = {
        "redis": {"host": "a", "options": {"ssl": False}},
        "plugins": {"disabled": ["x"]},
        "ALT_CLUSTERS": {"long": {"sqs": {"regions": ["eu"]}}},
    }
    config = Config.from_dict(source)
    before = copy.deepcopy(config.redacted())
    source["redis"]["host"] = "b"
    source["redis"]["options"]["ssl"] = True
    source["plugins"]["disabled"].append("y")
    source["ALT_CLUSTERS"]["long"]["sqs"]["regions"].append("us")
    source["workers"] = 99
    assert config.redacted() == before
    assert config.redis == {"host": "a", "options": {"ssl": False}}
    assert config.plugins["disabled"] == ("x",)


def test_frozen_map_behaves_like_a_read_only_dict():
    fm = FrozenMap({"a": 1, "b": {"c": [2]}})
    plain = {"a": 1, "b": {"c": [2]}}
    assert fm == plain
    assert plain == fm
    assert fm != {"a": 1}
    assert dict(fm) == {"a": 1, "b": {"c": [2]}}
    assert repr(FrozenMap({"a": 1})) == "FrozenMap({'a': 1})"
    assert FrozenMap({"a": 1}) | {"b": 2} == {"a": 1, "b": 2}
    assert hash(FrozenMap({"a": 1})) == hash(FrozenMap({"a": 1}))
    assert pickle.loads(pickle.dumps(fm)) == fm
    assert FrozenMap({"a": FrozenMap({"b": (1,)})}).to_dict() == {"a": {"b": [1]}}


# --------------------------------------------------------------------------- pickling


def test_pickle_round_trip():
    config = Config.from_dict(
        {**SEED_EXAMPLE, "error_reporter": {"sentry": {"dsn": "https://k@s.io/1"}},
         "plugins": {"disabled": ["x"]}, "broker_options": {"nested": {"list": [1, 2]}}},
        cluster="long", secret_key="s3cr3t", secret_key_fallbacks=["old"],
        time_zone="Europe/Paris",
    )
    clone = pickle.loads(pickle.dumps(config))
    assert clone == config
    assert clone.secret_key == "s3cr3t"
    assert hash(clone) == hash(config)
    assert isinstance(clone.redis, FrozenMap)
    assert pickle.loads(pickle.dumps(Config())) == Config()


# --------------------------------------------------------------------------- redaction


def test_redacted_hides_secrets_at_depth():
    config = Config.from_dict(
        {
            "redis": {"host": "localhost", "port": 6379, "password": "redis-pw",
                      "username": "me"},
            "sqs": {"aws_region": "us-east-1", "aws_access_key_id": "AKIA-ID",
                    "aws_secret_access_key": "aws-secret"},
            "error_reporter": {"sentry": {"dsn": "https://pub@sentry.io/1", "environment": "prod"},
                               "rollbar": {"access_token": "rollbar-token"}},
            "broker": "redis",
            "broker_options": {"url": "redis://user:url-pw@host:6379/0",
                               "extra": {"Auth_Token": "deep-token", "timeout": 5},
                               "nodes": ["redis://:node-pw@n1:6379", "redis://n2:6379"],
                               "copy_of_key": "the-secret-key"},
            "disque_auth": "disque-pw",
            "ALT_CLUSTERS": {"iron": {"iron_mq": {"token": "iron-token", "project_id": "p1"}}},
        },
        secret_key="the-secret-key", secret_key_fallbacks=["older-secret-key"],
    )
    shown = config.redacted()
    text = json.dumps(shown)  # plain data all the way down
    for secret in ("redis-pw", "AKIA-ID", "aws-secret", "pub@", "rollbar-token", "url-pw",
                   "deep-token", "node-pw", "the-secret-key", "older-secret-key", "disque-pw",
                   "iron-token"):
        assert secret not in text, secret
    assert "secret_key" not in shown and "secret_key_fallbacks" not in shown
    assert shown["redis"] == {"host": "localhost", "port": 6379, "password": "********",
                              "username": "me"}
    assert shown["sqs"]["aws_region"] == "us-east-1"
    assert shown["error_reporter"]["sentry"] == {"dsn": "********", "environment": "prod"}
    assert shown["broker_options"]["url"] == "redis://user:********@host:6379/0"
    assert shown["broker_options"]["extra"] == {"Auth_Token": "********", "timeout": 5}
    assert shown["broker_options"]["nodes"] == ["redis://:********@n1:6379", "redis://n2:6379"]
    assert shown["ALT_CLUSTERS"]["iron"]["iron_mq"] == {"token": "********", "project_id": "p1"}
    assert shown["workers"] == config.workers and shown["broker"] == "redis"


def test_redacted_masks_only_the_password_of_a_url():
    url = "redis://h:asdfqwer1234asdf@ec2-111-1-1-1.compute-1.amazonaws.com:111"
    shown = Config.from_dict({"redis": url}).redacted()
    assert shown["redis"] == "redis://h:********@ec2-111-1-1-1.compute-1.amazonaws.com:111"
    assert shown["broker_options"] == {"redis": shown["redis"]}
    assert Config.from_dict({"redis": "redis://:p@ss@h/0"}).redacted()["redis"] == (
        "redis://:********@h/0")
    plain = "redis://localhost:6379/0"
    assert Config.from_dict({"redis": plain}).redacted()["redis"] == plain
    query = Config.from_dict({"broker_options": {"url": "mongodb://h/db?password=x&ssl=true"}})
    assert query.redacted()["broker_options"]["url"] == "mongodb://h/db?password=********&ssl=true"


def test_redacted_keeps_unset_secrets_visible_as_none():
    shown = Config.from_dict({"redis": {"host": "h", "password": None}}).redacted()
    assert shown["redis"]["password"] is None


def test_redacted_uses_q_cluster_keys():
    shown = Config().redacted()
    assert "ALT_CLUSTERS" in shown and "alt_clusters" not in shown
    assert set(SETTINGS) <= set(shown)


# --------------------------------------------------------------------------- warnings


def test_no_warnings_by_default():
    assert Config().warnings() == []
    assert Config.from_dict({"timeout": 30}).warnings() == []
    assert Config.from_dict(SEED_EXAMPLE, cluster="long").warnings() == []


@pytest.mark.parametrize(("timeout", "retry"), [(60, 60), (90, 60), (10.5, 10)])
def test_warning_when_timeout_reaches_retry(timeout, retry):
    warnings = Config.from_dict({"timeout": timeout, "retry": retry}).warnings()
    assert len(warnings) == 1
    assert "retry" in warnings[0] and "timeout" in warnings[0]


def test_warning_for_an_alt_cluster_named_like_the_root():
    warnings = Config.from_dict({"ALT_CLUSTERS": {"default": {"workers": 1}}}).warnings()
    assert any("never used" in w for w in warnings)


# --------------------------------------------------------------------------- core stays clean


def test_importing_config_loads_no_django_or_broker_client():
    code = (
        "import sys, qhive.config\n"
        "bad = {'django', 'redis', 'boto3', 'pymongo', 'iron_mq', 'django_redis', 'sentry_sdk',"
        " 'rollbar'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
