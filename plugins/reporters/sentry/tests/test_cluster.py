"""A real ``manage.py qcluster`` with both reporters configured, each sending to a
recording server of its own: a failing task reaches Sentry and Rollbar with its data and
its own frames, from a worker process, and the cluster stops cleanly."""

from __future__ import annotations

import importlib.util

import pytest
from qhive_testkit.recording_server import RecordingServer

T = "qhive_testkit.tasks"


@pytest.mark.slow
def test_a_failing_task_reaches_sentry_and_rollbar(cluster_settings, qcluster,
                                                   recording_server):
    if importlib.util.find_spec("qhive_reporter_rollbar") is None:
        pytest.skip("qhive-reporter-rollbar is not installed (this package's [test] extra "
                    "lists it: pip install -e 'plugins/reporters/sentry[test]')")
    from qhive_django.tasks import async_task  # after django_project set Django up

    sentry = recording_server
    with RecordingServer() as rollbar:
        q = cluster_settings(ack_failures=True, error_reporter={
            "sentry": {"dsn": sentry.sentry_dsn(), "environment": "e2e"},
            "rollbar": {"access_token": "e2e-token", "environment": "e2e",
                        "endpoint": rollbar.rollbar_endpoint}})
        cluster = qcluster(q)
        task_id = async_task(f"{T}.boom", "from a worker", task_name="e2e-boom", group="e2e")
        [event] = sentry.wait_for(lambda requests: sentry.sentry_events(), timeout=120,
                                  what="the task's Sentry event")
        [item] = rollbar.wait_for(lambda requests: rollbar.rollbar_items(), timeout=120,
                                  what="the task's Rollbar item")
        assert cluster.stop() == 0, cluster.log()

    tags = {"task_id": task_id, "task_name": "e2e-boom", "func": f"{T}.boom",
            "group": "e2e", "attempt": "1", "cluster": q["name"]}
    assert event["tags"] == {f"qhive.{k}": v for k, v in tags.items()}
    [error] = event["exception"]["values"]
    assert (error["type"], error["value"]) == ("ValueError", "from a worker")
    frames = error["stacktrace"]["frames"]
    assert (frames[-1]["module"], frames[-1]["function"]) == (T, "boom")
    assert frames[-1]["in_app"] is True
    assert "qhive.pipeline" in {f["module"] for f in frames[:-1]}
    assert all(f["in_app"] is False for f in frames[:-1]), "qhive's frames are not in-app"

    assert item["custom"]["qhive"] == tags
    assert item["body"]["trace"]["exception"] == {"class": "ValueError",
                                                  "message": "from a worker"}
    assert [f["method"] for f in item["body"]["trace"]["frames"]] == ["boom"]
    assert item["environment"] == "e2e" and item["context"] == f"{T}.boom"

    log = cluster.log()
    assert "stopped (1 processed, 1 failed)" in log, log
    assert "error reporter" not in log and "Traceback" not in log, log
