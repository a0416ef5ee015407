"""The Rollbar reporter passes qhive's reporter contract, sending to a local recording
server over real HTTP with the real pyrollbar."""

import uuid

import pytest
from qhive_reporter_rollbar.reporter import RollbarReporter
from qhive_testkit import ReporterContract
from qhive_testkit.reporter import Hostile, UnprintableError, raised, task


class TestRollbarReporter(ReporterContract):
    @pytest.fixture
    def make_reporter(self, settings):
        made = []

        def make():
            made.append(RollbarReporter(**settings))
            return made[-1]

        yield make
        for reporter in made:  # what the contract reported reached the server, or timed out
            reporter.flush(10)


def test_the_contract_reports_reach_rollbar(reporter, items_saying):
    """The contract only checks that report() never raises; this checks that a report
    also arrives when the task is hostile and the error unprintable."""
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    reporter.report(raised(UnprintableError()), task(id=Hostile(), func=Hostile(), name=name))
    [item] = items_saying(name)
    assert item["body"]["trace"]["exception"] == {
        "class": "UnprintableError", "message": "<str() of the UnprintableError raised>"}
    assert item["custom"]["qhive"]["task_id"].startswith("<")  # a repr that did not raise
