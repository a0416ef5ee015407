"""No repr of a config shows a secret (issue 11, item 9): pluggy's tracing logs
every hook's arguments with ``str()``, the config among them."""

import logging

from qhive.config import Config, FrozenMap
from qhive.plugins import get_plugin_manager

SECRET = "s3cret"
REDIS_URL = f"redis://:{SECRET}@127.0.0.1:6379/0"


def secret_config():
    return Config.from_dict(
        {"name": "redacted", "redis": REDIS_URL,
         "broker_options": {"password": SECRET, "nodes": [REDIS_URL]},
         "result_store_options": {"redis": {"host": "127.0.0.1", "password": SECRET}},
         "ALT_CLUSTERS": {"long": {"sqs": {"aws_secret_access_key": SECRET}}}},
        secret_key="django-secret-key",
    )


def test_config_repr_and_str_are_redacted():
    config = secret_config()
    for text in (repr(config), str(config), f"{config}"):
        assert SECRET not in text and "django-secret-key" not in text
        assert text.startswith("Config(name='redacted', ")
        assert "redis='redis://:********@127.0.0.1:6379/0'" in text
        assert "'password': '********'" in text
    assert repr(Config()).startswith("Config(name='default', ")


def test_frozen_map_repr_is_redacted():
    options = FrozenMap({"url": REDIS_URL, "auth": {"token": SECRET}, "hosts": (REDIS_URL,),
                         "inner": FrozenMap({"password": SECRET}), "db": 0})
    text = repr(options)
    assert SECRET not in text
    assert text.startswith("FrozenMap({'url': 'redis://:********@127.0.0.1:6379/0'")
    assert "'auth': '********'" in text and "'db': 0" in text
    assert repr(FrozenMap({"a": 1})) == "FrozenMap({'a': 1})"
    assert options["auth"]["token"] == SECRET  # the values themselves are untouched


def test_traced_hook_arguments_never_show_a_secret(fresh_plugins, monkeypatch, caplog):
    monkeypatch.setenv("QHIVE_TRACE_PLUGINS", "1")
    config = secret_config()
    pm = get_plugin_manager(config)
    with caplog.at_level(logging.INFO, logger="qhive.trace"):
        pm.hook.qhive_check_config(config=config)
        pm.hook.qhive_cluster_config(name="long", config=config)
    traced = "\n".join(r.getMessage() for r in caplog.records if r.name == "qhive.trace")
    assert "qhive_check_config" in traced and "127.0.0.1:6379" in traced, traced
    assert SECRET not in traced and "django-secret-key" not in traced
