"""``QHIVE_TRACE_PLUGINS=1`` on a Redis project never logs its password (issue 11,
item 9): the config, the broker and the result store are all traced hook arguments."""

import logging

import pytest
from qhive.config import Config
from qhive.pipeline import Pipeline
from qhive.plugins import get_plugin_manager, hookimpl

SECRET = "s3cret"


class Sent:
    """Answers ``qhive_enqueue`` first: the task is traced but never reaches Redis
    (whose server has no password)."""

    @hookimpl(tryfirst=True)
    def qhive_enqueue(self, task, broker, codec):
        return task["id"]


@pytest.mark.parametrize("store", ["redis", "memory"])
def test_trace_of_a_redis_pipeline_never_shows_the_password(store, fresh_plugins, monkeypatch,
                                                             caplog):
    monkeypatch.setenv("QHIVE_TRACE_PLUGINS", "1")
    config = Config.from_dict(
        {"name": "traced", "redis": f"redis://:{SECRET}@127.0.0.1:6379/0",
         "broker_options": {"redis": {"host": "127.0.0.1", "password": SECRET}},
         "result_store": store},
        secret_key="django-secret-key",
    )
    pm = get_plugin_manager(config)
    pm.register(Sent())
    with caplog.at_level(logging.INFO, logger="qhive.trace"):
        pipeline = Pipeline(config, plugin_manager=pm)
        try:
            pipeline.result_store  # noqa: B018 (built and registered: it is traced too)
            pipeline.enqueue("math.floor", (1.5,))
            pm.hook.qhive_check_config(config=config)
        finally:
            pipeline.close()
    traced = "\n".join(r.getMessage() for r in caplog.records if r.name == "qhive.trace")
    assert "qhive_configure" in traced and "qhive_enqueue" in traced, traced
    assert "RedisBroker" in traced and "127.0.0.1:6379" in traced, traced
    assert SECRET not in traced
    assert "django-secret-key" not in traced
