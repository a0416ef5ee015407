"""The Sentry reporter passes qhive's reporter contract, sending to a local recording
server over real HTTP with the real sentry-sdk."""

import pytest
from qhive_reporter_sentry.reporter import SentryReporter
from qhive_testkit import ReporterContract
from qhive_testkit.reporter import Hostile, UnprintableError, raised, task


class TestSentryReporter(ReporterContract):
    @pytest.fixture
    def make_reporter(self, recording_server):
        made = []

        def make():
            made.append(SentryReporter(dsn=recording_server.sentry_dsn()))
            return made[-1]

        yield make
        for reporter in made:  # what the contract reported reached the server, or timed out
            reporter.flush(10)


def test_the_contract_reports_reach_sentry(recording_server):
    """The contract only checks that report() never raises; this checks that a report
    also arrives when the task is hostile and the error unprintable."""
    reporter = SentryReporter(dsn=recording_server.sentry_dsn())
    reporter.report(raised(UnprintableError()), task(id=Hostile(), func=Hostile()))
    assert reporter.flush(30) is True
    [event] = recording_server.wait_for(lambda requests: recording_server.sentry_events())
    assert event["exception"]["values"][-1]["type"] == "UnprintableError"
    assert event["tags"]["qhive.task_name"] == "victor-hotel-seven-alpha"
    assert event["tags"]["qhive.task_id"].startswith("<")  # a repr that did not raise
