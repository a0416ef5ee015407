"""A bad ``Q_CLUSTER["iron_mq"]`` is one clear line in ``manage.py check`` (qhive.E004,
from the package's ``qhive_check_config`` hook), before any cluster starts."""

from __future__ import annotations

import subprocess

import pytest
from qhive_testkit.ironmq_emulator import PROJECT_ID, TOKEN


@pytest.fixture
def qhive_checks(django_project):
    """``qhive_checks(Q_CLUSTER) -> [(id, message)]``: Django's system checks, tag qhive."""
    from django.core.checks import run_checks
    from django.test import override_settings
    from qhive_django.conf import reset

    def run(q_cluster: dict) -> list[tuple[str, str]]:
        with override_settings(Q_CLUSTER=q_cluster):
            try:
                return [(m.id, m.msg) for m in run_checks(tags=["qhive"])]
            finally:
                reset()

    return run


def test_a_good_setting_passes(qhive_checks):
    assert qhive_checks({"name": "ironcheck", "iron_mq": {"token": TOKEN,
                                                          "project_id": PROJECT_ID}}) == []


@pytest.mark.parametrize(("iron_mq", "says"), [
    ({"tokn": TOKEN, "project_id": PROJECT_ID},
     "IronMQ broker: iron_mq.IronMQ takes no option 'tokn' in Q_CLUSTER['iron_mq'] — did you "
     "mean 'token'?"),
    ({"token": TOKEN, "project_id": PROJECT_ID, "protocol": "ftp"},
     "IronMQ broker: Q_CLUSTER['iron_mq']['protocol'] must be 'https' or 'http', got 'ftp'"),
])
def test_a_bad_setting_is_one_error(qhive_checks, iron_mq, says):
    assert qhive_checks({"name": "ironcheck", "iron_mq": iron_mq}) == [("qhive.E004", says)]


def test_an_explicit_broker_is_checked_too(qhive_checks):
    [(code, message)] = qhive_checks({"name": "ironcheck", "broker": "ironmq",
                                      "broker_options": {"iron_mq": {"port": 0}}})
    assert code == "qhive.E004" and "Q_CLUSTER['iron_mq']['port'] must be a port" in message


def test_other_brokers_are_left_alone(qhive_checks):
    assert qhive_checks({"name": "ironcheck", "broker": "memory",
                         "result_store": "memory"}) == []


def test_manage_py_check_shows_the_missing_token_in_one_line(django_project, tmp_path):
    env = django_project.env({"name": "ironcheck", "iron_mq": {"project_id": PROJECT_ID}})
    env = {k: v for k, v in env.items() if not k.startswith(("IRON_", "IRON_MQ_"))}
    env["HOME"] = str(tmp_path)  # no ~/.iron.json; the cwd has no iron.json either
    done = subprocess.run(django_project.manage("check"), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = [x for x in done.stderr.splitlines() if "qhive.E004" in x]
    assert line == ("settings.Q_CLUSTER: (qhive.E004) IronMQ broker: no token: set "
                    "Q_CLUSTER['iron_mq']['token'] (or the IRON_TOKEN / IRON_MQ_TOKEN "
                    "environment variable, or \"token\" in iron.json or in the file of "
                    "Q_CLUSTER['iron_mq']['config_file']): an API token of the project, from "
                    "https://hud.iron.io"), done.stderr
    assert "Traceback" not in done.stderr
