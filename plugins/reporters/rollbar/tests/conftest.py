"""pyrollbar is one set-up per process: the tests of a session (of an xdist worker) all
send to one recording server with one token, and each finds its own items by their
message. What needs another set-up runs in a new interpreter (``run_python``)."""

import json

import pytest
from qhive_reporter_rollbar.reporter import RollbarReporter
from qhive_testkit.recording_server import RecordingServer


@pytest.fixture(scope="session")
def rollbar_server():
    with RecordingServer() as server:
        yield server


@pytest.fixture
def settings(rollbar_server):
    """``Q_CLUSTER['error_reporter']['rollbar']`` of this session."""
    return {"access_token": "qhive-test-token", "environment": "qhive-tests",
            "endpoint": rollbar_server.rollbar_endpoint}


@pytest.fixture
def reporter(settings):
    made = RollbarReporter(**settings)
    yield made
    made.flush(10)


@pytest.fixture
def items_saying(rollbar_server):
    """``items_saying(text)``: the Rollbar items that contain ``text`` (in their message,
    their data), once there is one (fails after 30 s)."""

    def find(text: str) -> list[dict]:
        def mine(requests):
            return [item for item in rollbar_server.rollbar_items()
                    if text in json.dumps(item)]

        return rollbar_server.wait_for(mine, what=f"a Rollbar item saying {text!r}")

    return find
