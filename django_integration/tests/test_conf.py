"""Q_CLUSTER read lazily into qhive config, cached, and rebuilt when settings change."""

import os
import subprocess
import sys

import pytest
from django.apps import apps
from django.test import override_settings
from qhive.errors import BadSignature, ConfigError
from qhive_django.conf import get_config, get_pipeline
from qhive_django.tasks import async_task, result

T = "qhive_testkit.tasks"


def test_importing_the_app_reads_no_settings_and_loads_no_plugin():
    # (qhive_django.models defines Schedule: like every models module, it needs Django set up.)
    code = """
import qhive_django, qhive_django.tasks, qhive_django.signals, qhive_django.recurrence
import qhive_django.hooks, qhive_django.checks, qhive_django.runtime, qhive_django.apps
import qhive.plugins
assert qhive.plugins._manager is None
"""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_config_comes_from_django_settings(q_cluster):
    q = q_cluster(timeout=12.5)
    config = get_config()
    assert (config.name, config.timeout, config.broker) == (q["name"], 12.5, "memory")
    assert config.secret_key == "qhive-test-secret-key"
    assert config.time_zone == "UTC"
    assert get_config() is config  # parsed once


def test_time_zone_only_with_use_tz(q_cluster):
    q_cluster()
    with override_settings(TIME_ZONE="Europe/Paris"):
        assert get_config().time_zone == "Europe/Paris"
        with override_settings(USE_TZ=False):
            assert get_config().time_zone is None


def test_override_settings_rebuilds_config_and_pipeline(q_cluster):
    q_cluster(workers=2)
    config, pipeline = get_config(), get_pipeline()
    assert get_pipeline() is pipeline and pipeline.config is config
    with override_settings(SECRET_KEY="another-key"):
        assert get_config().secret_key == "another-key"
        assert get_pipeline() is not pipeline
    q_cluster(workers=3)
    assert get_config().workers == 3


def test_alt_clusters_and_the_environment(q_cluster, monkeypatch):
    q = q_cluster(timeout=10, ALT_CLUSTERS={"long": {"timeout": 600}})
    assert get_config("long").timeout == 600
    assert get_pipeline("long").config.queue == "long"
    assert get_pipeline().config.queue == q["name"]
    monkeypatch.setenv("Q_CLUSTER_NAME", "long")
    assert get_config().cluster_name == "long"
    monkeypatch.setenv("Q_CLUSTER_NAME", "lnog")
    with pytest.raises(ConfigError, match="did you mean 'long'"):
        get_config()


def test_verbose_name_is_the_label_read_when_asked(q_cluster):
    app = apps.get_app_config("qhive_django")
    assert app.verbose_name == "Django Q"
    q_cluster(label="Background jobs")
    assert app.verbose_name == "Background jobs"


def test_old_secret_key_still_verifies_as_a_fallback(q_cluster):
    q_cluster()
    with override_settings(SECRET_KEY="old-key"):
        task_id = async_task(f"{T}.add", 20, 22)
    with override_settings(SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"]):
        assert [r.id for r in get_pipeline().drain()] == [task_id]
        assert result(task_id) == 42


def test_without_the_fallback_an_old_package_is_rejected(q_cluster, caplog):
    q_cluster()
    with override_settings(SECRET_KEY="old-key"):
        async_task(f"{T}.add", 1, 1)
    with override_settings(SECRET_KEY="new-key"):
        pipeline = get_pipeline()
        assert pipeline.drain() == []
        assert "rejected message" in caplog.text
        assert pipeline.broker.queue_size() == 0
        with pytest.raises(BadSignature):
            pipeline.codec.decode(b"tampered")
