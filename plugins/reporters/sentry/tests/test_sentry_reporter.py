"""The Sentry reporter with the real sentry-sdk, sending over HTTP to a local recording
server: what an event carries (tags, exception, the task's frames in-app and qhive's
not), its settings and their errors, a bounded flush against a hanging server, and a
project's own Sentry set-up left as it was."""

from __future__ import annotations

import pytest
from qhive.errors import ConfigError
from qhive_reporter_sentry.reporter import SentryReporter
from qhive_testkit.recording_server import RecordingServer
from qhive_testkit.reporter import raised, task

T = "qhive_testkit.tasks"


def frames_of(event: dict, index: int = -1) -> list[dict]:
    return event["exception"]["values"][index]["stacktrace"]["frames"]


def where(frame: dict) -> str:
    return f"{frame.get('module')}.{frame.get('function')}"


def one_event(server) -> dict:
    [event] = server.wait_for(lambda requests: server.sentry_events(), what="a Sentry event")
    return event


# --------------------------------------------------------------------------- what arrives


def test_a_failed_task_arrives_with_its_tags_and_its_own_frames(make_pipeline,
                                                               recording_server):
    p = make_pipeline(error_reporter={
        "sentry": {"dsn": recording_server.sentry_dsn(), "environment": "qa"}})
    task_id = p.enqueue(f"{T}.boom", ("reported!",), task_name="the-boom", group="maths")
    [result] = p.drain()
    assert result.id == task_id and not result.success
    event = one_event(recording_server)

    assert event["tags"] == {"qhive.task_id": task_id, "qhive.task_name": "the-boom",
                             "qhive.func": f"{T}.boom", "qhive.group": "maths",
                             "qhive.cluster": p.config.cluster_name}  # no attempt: not given
    [error] = event["exception"]["values"]
    assert (error["type"], error["value"]) == ("ValueError", "reported!")
    assert error["mechanism"] == {"type": "qhive", "handled": False}
    assert event["environment"] == "qa" and event["transaction"] == f"{T}.boom"
    assert event["contexts"]["qhive_task"] == {k.removeprefix("qhive."): v for k, v in
                                               event["tags"].items()}

    frames = frames_of(event)
    task_frame = next(i for i, f in enumerate(frames) if where(f) == f"{T}.boom")
    assert task_frame == len(frames) - 1, "the task raised: its frame is the last"
    callers = frames[:task_frame]
    # the real pipeline's frames are there, marked not in-app: qhive's and pluggy's
    assert {"qhive.pipeline", "qhive.builtin.hooks"} <= {f["module"] for f in callers}
    assert any(f["module"].startswith("pluggy") for f in callers)
    assert [where(f) for f in callers if f.get("in_app") is not False] == []
    assert frames[task_frame]["in_app"] is True  # in the project's root: the SDK's call


def test_a_task_called_wrongly_keeps_the_call_in_app(make_pipeline, recording_server):
    p = make_pipeline(error_reporter={"sentry": {"dsn": recording_server.sentry_dsn()}})
    p.enqueue(f"{T}.boom", (), {"no_such_argument": 1})
    p.drain()
    frames = frames_of(one_event(recording_server))
    assert where(frames[-1]) == "qhive.builtin.hooks.qhive_execute_task"
    assert frames[-1].get("in_app") is not False
    assert all(f["in_app"] is False for f in frames[:-1])


def test_a_chained_error_carries_its_cause(recording_server):
    try:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError as cause:
            raise LookupError("while handling") from cause
    except LookupError as error:
        SentryReporter(dsn=recording_server.sentry_dsn()).report(error, task())
    values = one_event(recording_server)["exception"]["values"]
    assert [(v["type"], v["value"]) for v in values] == [
        ("ZeroDivisionError", "division by zero"), ("LookupError", "while handling")]


def test_without_a_task_the_error_still_arrives_untagged(recording_server):
    reporter = SentryReporter(dsn=recording_server.sentry_dsn())
    reporter.report(raised(KeyError("no task")), None)
    event = one_event(recording_server)
    assert event["exception"]["values"][0]["type"] == "KeyError"
    assert event["tags"] == {} and "transaction" not in event


def test_the_attempt_and_a_callable_func_become_tags(recording_server):
    reporter = SentryReporter(dsn=recording_server.sentry_dsn())
    reporter.report(raised(ValueError("x")), task(func=frames_of, attempt=3, group=""))
    tags = one_event(recording_server)["tags"]
    assert tags["qhive.attempt"] == "3" and tags["qhive.func"] == f"{__name__}.frames_of"
    assert "qhive.group" not in tags  # an empty group is no group


def test_client_options_reach_the_sdk(recording_server):
    reporter = SentryReporter(dsn=recording_server.sentry_dsn(), release="myapp@1.2.3",
                              server_name="worker-7",
                              before_send=lambda event, hint: {**event, "level": "fatal"})
    reporter.report(raised(ValueError("x")), task())
    event = one_event(recording_server)
    assert (event["release"], event["server_name"], event["level"]) == (
        "myapp@1.2.3", "worker-7", "fatal")
    auth = recording_server.requests[0].headers["x-sentry-auth"]
    assert "sentry_key=public" in auth


# --------------------------------------------------------------------------- settings


def test_a_missing_dsn_names_the_setting():
    with pytest.raises(ConfigError) as raised_:
        SentryReporter()
    assert "Q_CLUSTER['error_reporter']['sentry']['dsn'] is missing" in str(raised_.value)
    assert raised_.value.key == "error_reporter.sentry.dsn"


def test_an_unknown_option_says_what_was_meant():
    with pytest.raises(ConfigError, match=r"unknown option 'enviroment' in "
                       r"Q_CLUSTER\['error_reporter'\]\['sentry'\] — did you mean "
                       r"'environment'\?"):
        SentryReporter(dsn="http://public@127.0.0.1:9/1", enviroment="prod")


def test_a_bad_dsn_is_a_config_error_without_the_key():
    with pytest.raises(ConfigError, match=r"sentry_sdk.Client refused .*BadDsn") as raised_:
        SentryReporter(dsn="ftp://s3cr3t@example.invalid/1")
    assert "s3cr3t" not in str(raised_.value)


def test_the_cluster_builds_it_from_django_q2_settings(make_pipeline, recording_server):
    """Built through its entry point, as Q_CLUSTER['error_reporter'] names it."""
    p = make_pipeline(error_reporter={
        "sentry": {"dsn": recording_server.sentry_dsn(), "sample_rate": 1.0}})
    [reporter] = p.reporting.reporters
    assert isinstance(reporter, SentryReporter)
    assert reporter.options["sample_rate"] == 1.0
    assert repr(reporter) == f"<SentryReporter {recording_server.url}/1>"  # no key


# --------------------------------------------------------------------------- flush


def test_flush_is_bounded_while_sentry_hangs(recording_server):
    reporter = SentryReporter(dsn=recording_server.sentry_dsn())
    with recording_server.stall():
        reporter.report(raised(ValueError("held")), task())
        recording_server.wait_for(lambda requests: recording_server.sentry_events())
        # report() handed the event over: it is still being sent when flush gives up
        assert reporter.flush(0.5) is False
    assert reporter.flush(30) is True


def test_flush_with_nothing_sent_is_done():
    reporter = SentryReporter(dsn="http://public@127.0.0.1:9/1")
    assert reporter.flush(5) is True
    assert reporter.flush(0) is None


# --------------------------------------------------------------------------- isolation


PROJECT = """
import json, os
import sentry_sdk
from qhive.drivers import build_driver

# the project's own Sentry set-up, as in its settings.py
sentry_sdk.init(dsn=os.environ["PROJECT_DSN"])
sentry_sdk.set_tag("project", "mine")
sentry_sdk.add_breadcrumb(message="project breadcrumb")

reporter = build_driver("reporter", "sentry", {"dsn": os.environ["QHIVE_DSN"]})
try:
    raise ValueError("task error")
except ValueError as error:
    reporter.report(error, {"id": "t1", "name": "n", "func": "app.tasks.f"})
sentry_sdk.capture_message("project message")
done = reporter.flush(30)
sentry_sdk.flush(30)
print(json.dumps({"done": done, "dsn": sentry_sdk.get_client().dsn,
                  "project_tags": sentry_sdk.get_isolation_scope()._tags}))
"""


def test_the_projects_own_sentry_set_up_is_left_as_it_was(run_python, recording_server):
    with RecordingServer() as project:
        result, _ = run_python(PROJECT, PROJECT_DSN=project.sentry_dsn(),
                               QHIVE_DSN=recording_server.sentry_dsn())
        assert result == {"done": True, "dsn": project.sentry_dsn(),
                          "project_tags": {"project": "mine"}}
        ours = one_event(recording_server)
        theirs = one_event(project)
    assert ours["exception"]["values"][0]["value"] == "task error"
    assert "project" not in ours["tags"] and "breadcrumbs" not in ours
    assert theirs["message"] == "project message"
    assert theirs["tags"] == {"project": "mine"}  # none of the task's
