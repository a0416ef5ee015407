"""``manage.py check`` reports a bad ``Q_CLUSTER['sqs']`` in one line, before any cluster
starts: this package's ``qhive_check_config`` hook builds the broker as ``qcluster``
would (reading the settings and the region, never the network) — ``qhive.E004``."""

from __future__ import annotations

import subprocess
import uuid

import pytest

AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")
MISSING_REGION = ("SQS broker: no AWS region: set Q_CLUSTER['sqs']['aws_region'] (e.g. "
                  "'eu-west-1'), or $AWS_DEFAULT_REGION, or a region in the AWS profile")


def check(django_project, tmp_path, q: dict) -> subprocess.CompletedProcess:
    """``manage.py check`` with ``q`` as Q_CLUSTER, on a machine without AWS settings."""
    env = django_project.env(q)
    for variable in AWS_VARIABLES:
        env.pop(variable, None)
    env.update(AWS_CONFIG_FILE=str(tmp_path / "no-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
               AWS_EC2_METADATA_DISABLED="true")
    return subprocess.run(django_project.manage("check"), env=env, capture_output=True,
                          text=True, timeout=120)


def test_manage_py_check_names_the_missing_region(django_project, tmp_path):
    q = {"name": f"sqs-check-{uuid.uuid4().hex[:8]}",
         "sqs": {"aws_access_key_id": "AKIAEXAMPLEKEY000001", "aws_secret_access_key": "s3cr3t"}}
    done = check(django_project, tmp_path, q)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if "qhive.E004" in line]
    assert lines == [f"settings.Q_CLUSTER: (qhive.E004) {MISSING_REGION}"], done.stderr
    assert "s3cr3t" not in done.stdout + done.stderr

    q["sqs"]["aws_region"] = "eu-west-1"  # no server is needed: nothing connects
    done = check(django_project, tmp_path, q)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("sqs, problem", [
    ({"aws_region": "eu-west-1", "aws_regoin": "x"},
     "SQS broker: unknown key 'aws_regoin' in Q_CLUSTER['sqs'] — did you mean 'aws_region'?"),
    ({"aws_region": "eu-west-1", "receive_message_wait_time_seconds": 30},
     "SQS broker: Q_CLUSTER['sqs']['receive_message_wait_time_seconds'] must be a whole "
     "number of seconds from 0 to 20, got 30"),
])
def test_a_bad_key_is_one_line(django_project, sqs, problem):
    from django.core.checks import run_checks
    from django.test import override_settings

    with override_settings(Q_CLUSTER={"name": f"sqs-check-{uuid.uuid4().hex[:8]}", "sqs": sqs}):
        found = [(m.id, m.msg) for m in run_checks(tags=["qhive"])]
    assert found == [("qhive.E004", problem)]


def test_other_brokers_are_not_checked(django_project):
    from django.core.checks import run_checks
    from django.test import override_settings

    with override_settings(Q_CLUSTER={"name": f"sqs-check-{uuid.uuid4().hex[:8]}"}):
        assert [m for m in run_checks(tags=["qhive"]) if "SQS" in m.msg] == []
