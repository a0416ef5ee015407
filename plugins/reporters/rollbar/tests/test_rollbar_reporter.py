"""The Rollbar reporter with the real pyrollbar, sending over HTTP to a local recording
server: what an item carries (the task's data, the exception, the task's frames and not
qhive's), its settings and their errors, a bounded flush against a hanging server, and
pyrollbar's one set-up per process (a project's own kept, said once)."""

from __future__ import annotations

import json
import textwrap
import uuid

import pytest
from qhive.errors import ConfigError
from qhive_reporter_rollbar.reporter import RollbarReporter
from qhive_testkit.recording_server import RecordingServer
from qhive_testkit.reporter import raised, task

T = "qhive_testkit.tasks"


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


def where(frame: dict) -> str:
    return f"{frame['filename']}:{frame['method']}"


# --------------------------------------------------------------------------- what arrives


def test_a_failed_task_arrives_with_its_data_and_only_its_own_frames(make_pipeline, settings,
                                                                     items_saying,
                                                                     rollbar_server):
    message = unique("reported!")
    p = make_pipeline(error_reporter={"rollbar": settings})
    task_id = p.enqueue(f"{T}.boom", (message,), task_name="the-boom", group="maths")
    [result] = p.drain()
    assert result.id == task_id and not result.success
    [item] = items_saying(message)

    assert item["custom"]["qhive"] == {
        "task_id": task_id, "task_name": "the-boom", "func": f"{T}.boom", "group": "maths",
        "cluster": p.config.cluster_name}
    assert item["context"] == f"{T}.boom" and item["environment"] == settings["environment"]
    trace = item["body"]["trace"]
    assert trace["exception"] == {"class": "ValueError", "message": message}
    # only the task's own frame: the pipeline and pluggy's hook calls are left out
    assert [(f["filename"].endswith("qhive_testkit/tasks.py"), f["method"])
            for f in trace["frames"]] == [(True, "boom")]
    [request] = [r for r in rollbar_server.requests if message in r.body.decode()]
    assert request.path == "/api/1/item/"
    assert request.headers["x-rollbar-access-token"] == settings["access_token"]


def test_a_task_called_wrongly_keeps_the_call(make_pipeline, settings, items_saying):
    p = make_pipeline(error_reporter={"rollbar": settings})
    argument = f"no_such_argument_{uuid.uuid4().hex[:8]}"
    p.enqueue(f"{T}.boom", (), {argument: 1})
    p.drain()
    [item] = items_saying(argument)
    frames = item["body"]["trace"]["frames"]
    assert [f["method"] for f in frames] == ["qhive_execute_task"]
    assert frames[0]["filename"].endswith("qhive/builtin/hooks.py")


def test_a_chained_error_carries_its_cause(reporter, items_saying):
    message = unique("while handling")
    try:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError as cause:
            raise LookupError(message) from cause
    except LookupError as error:
        reporter.report(error, task())
    [item] = items_saying(message)
    chain = item["body"]["trace_chain"]
    assert [link["exception"] for link in chain] == [
        {"class": "LookupError", "message": message},
        {"class": "ZeroDivisionError", "message": "division by zero"}]


def test_without_a_task_the_error_still_arrives(reporter, items_saying):
    message = unique("no task")
    reporter.report(raised(KeyError(message)), None)
    [item] = items_saying(message)
    assert item["body"]["trace"]["exception"]["class"] == "KeyError"
    assert "custom" not in item and "context" not in item


def test_the_attempt_and_a_callable_func_are_data(reporter, items_saying):
    message = unique("attempt")
    reporter.report(raised(ValueError(message)), task(func=where, attempt=3, group=""))
    [item] = items_saying(message)
    data = item["custom"]["qhive"]
    assert data["attempt"] == "3" and data["func"] == f"{__name__}.where"
    assert "group" not in data  # an empty group is no group


# --------------------------------------------------------------------------- settings


def test_a_missing_access_token_names_the_setting():
    with pytest.raises(ConfigError) as raised_:
        RollbarReporter(environment="production")
    assert "Q_CLUSTER['error_reporter']['rollbar']['access_token'] is missing" \
        in str(raised_.value)
    assert raised_.value.key == "error_reporter.rollbar.access_token"


def test_an_unknown_option_says_what_was_meant(settings):
    with pytest.raises(ConfigError, match=r"unknown option 'endpiont' in "
                       r"Q_CLUSTER\['error_reporter'\]\['rollbar'\] — did you mean "
                       r"'endpoint'\?"):
        RollbarReporter(access_token=settings["access_token"], endpiont="http://x/api/1/")


def test_an_unknown_handler_lists_them(settings):
    with pytest.raises(ConfigError, match=r"\['handler'\] is 'threads'; pyrollbar's "
                       r"handlers: default, blocking, thread"):
        RollbarReporter(access_token=settings["access_token"], handler="threads")


def test_the_cluster_builds_it_from_django_q2_settings(make_pipeline, settings):
    p = make_pipeline(error_reporter={"rollbar": {**settings, "timeout": 5}})
    [reporter] = p.reporting.reporters
    assert isinstance(reporter, RollbarReporter)
    assert reporter.options == {"endpoint": settings["endpoint"], "timeout": 5,
                                "allow_logging_basic_config": False}
    assert settings["access_token"] not in repr(reporter)


# --------------------------------------------------------------------------- flush


def test_flush_is_bounded_while_rollbar_hangs(reporter, rollbar_server, items_saying):
    message = unique("held")
    with rollbar_server.stall():
        reporter.report(raised(ValueError(message)), task())
        items_saying(message)
        # report() handed the item over: it is still being sent when flush gives up
        assert reporter.flush(0.5) is False
    assert reporter.flush(30) is True


# --------------------------------------------------------------------------- one set-up

SET_UP = """
import json, logging, os
import rollbar
from qhive.drivers import build_driver

logs = []
logging.getLogger("qhive.reporters.rollbar").addHandler(logging.Handler())
logging.getLogger("qhive.reporters.rollbar").handlers[0].emit = logs.append

def reporter(**options):
    return build_driver("reporter", "rollbar", {"access_token": "qhive-token",
                        "environment": "qhive", "endpoint": os.environ["QHIVE"], **options})

def fail(reporter, message):
    try:
        raise ValueError(message)
    except ValueError as error:
        reporter.report(error, {"id": "t1", "func": "app.tasks.f"})
"""


def test_the_reporter_sets_rollbar_up_once_per_process(run_python, items_saying,
                                                       rollbar_server):
    """In a fresh process: the first reporter's settings (the blocking handler: the item
    is sent within report()), no logging.basicConfig(); a second reporter with other
    settings reports there too, and says so once."""
    code = SET_UP + textwrap.dedent("""
    first = reporter(handler="blocking")
    fail(first, os.environ["FIRST"])
    other = reporter(environment="elsewhere")
    fail(other, os.environ["SECOND"])
    fail(other, os.environ["SECOND"] + " again")
    print(json.dumps({"warnings": [r.getMessage() for r in logs],
                      "root_handlers": len(logging.getLogger().handlers),
                      "settings": [rollbar.SETTINGS[k] for k in
                                   ("access_token", "environment", "handler")],
                      "flushed": first.flush(10)}))
    """)
    first, second = unique("first"), unique("second")
    result, _ = run_python(code, QHIVE=rollbar_server.rollbar_endpoint, FIRST=first,
                           SECOND=second)
    assert result["settings"] == ["qhive-token", "qhive", "blocking"]
    assert result["root_handlers"] == 0, "rollbar.init must not call logging.basicConfig()"
    assert result["flushed"] is True
    [warning] = result["warnings"]
    assert "a second Rollbar reporter with other settings" in warning
    [item] = items_saying(first)
    assert item["environment"] == "qhive"
    assert [i["environment"] for i in items_saying(second)] == ["qhive", "qhive"]


def test_a_projects_own_rollbar_set_up_is_kept_and_said_once(run_python, rollbar_server):
    code = SET_UP + textwrap.dedent("""
    rollbar.init("project-token", "project-env", endpoint=os.environ["PROJECT"],
                 handler="blocking")
    ours = reporter()
    fail(ours, os.environ["MESSAGE"])
    fail(ours, os.environ["MESSAGE"] + " again")
    print(json.dumps({"warnings": [r.getMessage() for r in logs],
                      "settings": [rollbar.SETTINGS[k] for k in
                                   ("access_token", "environment", "endpoint")]}))
    """)
    message = unique("to the project")
    with RecordingServer() as project:
        result, _ = run_python(code, QHIVE=rollbar_server.rollbar_endpoint,
                               PROJECT=project.rollbar_endpoint, MESSAGE=message)
        items = project.wait_for(
            lambda requests: len(found := project.rollbar_items()) == 2 and found)
    assert result["settings"] == ["project-token", "project-env", project.rollbar_endpoint]
    [warning] = result["warnings"]
    assert "Rollbar was already set up in this process" in warning
    assert "task errors go there" in warning
    assert [i["environment"] for i in items] == ["project-env", "project-env"]
    assert items[0]["custom"]["qhive"]["task_id"] == "t1"
    assert not [i for i in rollbar_server.rollbar_items() if message in json.dumps(i)]
