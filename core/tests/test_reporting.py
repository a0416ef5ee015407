"""Error reporters: each configured one loads and fails on its own, and none can
delay or fail the task it reports."""

import logging
import threading

from qhive.contracts import Reporter
from qhive.plugins import hookimpl

T = "qhive_testkit.tasks"


class Recording(Reporter):
    def __init__(self, *, config=None):
        super().__init__(config=config)
        self.seen = []

    def report(self, error, task=None):
        self.seen.append((type(error).__name__, (task or {}).get("id")))


class Raising(Reporter):
    def report(self, error, task=None):
        raise RuntimeError("reporter broke")


class BrokenAtStart(Recording):
    def __init__(self, *, config=None):
        raise ValueError("cannot reach the service")


class Hanging(Reporter):
    """Blocks in report() until released: a service that does not answer."""

    def __init__(self, *, config=None):
        super().__init__(config=config)
        self.release = threading.Event()
        self.entered = threading.Event()
        self.finished = threading.Event()

    def report(self, error, task=None):
        self.entered.set()
        self.release.wait(30)
        self.finished.set()


class Drivers:
    def __init__(self, factories):
        self.factories = factories

    @hookimpl
    def qhive_register_drivers(self, registry):
        for name, factory in self.factories.items():
            registry.add("reporter", name, factory)


def pipeline_with(make_pipeline, reporters, **factories):
    p = make_pipeline(error_reporter={name: {} for name in reporters})
    p.pm.register_checked(Drivers(factories))
    return p


def failing_task(p):
    task_id = p.enqueue(f"{T}.boom", ("reported!",))
    [result] = p.drain()
    assert result.id == task_id and not result.success
    return task_id


def test_a_missing_reporter_is_named_once_and_the_others_still_report(make_pipeline, caplog):
    p = pipeline_with(make_pipeline, ["pagerduty", "recording"], recording=Recording)
    with caplog.at_level(logging.DEBUG, logger="qhive.reporters"):
        task_id = failing_task(p)
        failing_task(p)
        assert p.reporting.flush()
    [recording] = p.reporting.reporters
    assert recording.seen[0] == ("ValueError", task_id) and len(recording.seen) == 2
    lines = [r for r in caplog.records if "pagerduty" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert "'pagerduty' is not installed" in lines[0].getMessage()
    assert "the other reporters still report" in lines[0].getMessage()


def test_a_worker_leaves_saying_it_to_its_sentinel(make_pipeline, caplog):
    p = pipeline_with(make_pipeline, ["pagerduty"])
    with caplog.at_level(logging.DEBUG, logger="qhive.reporters"):
        p.load_reporters(quiet=True)
    [line] = [r for r in caplog.records if "pagerduty" in r.getMessage()]
    assert line.levelno == logging.DEBUG


def test_a_reporter_that_cannot_be_built_is_left_out(make_pipeline, caplog):
    p = pipeline_with(make_pipeline, ["broken", "recording"], broken=BrokenAtStart,
                      recording=Recording)
    with caplog.at_level(logging.ERROR, logger="qhive.reporters"):
        failing_task(p)
        assert p.reporting.flush()
    assert [type(r) for r in p.reporting.reporters] == [Recording]
    assert len(p.reporting.reporters[0].seen) == 1
    assert any("'broken' is left out" in r.getMessage() and "cannot reach the service"
               in r.getMessage() for r in caplog.records)


def test_a_raising_reporter_neither_fails_the_task_nor_stops_the_next(make_pipeline, caplog):
    p = pipeline_with(make_pipeline, ["raising", "recording"], raising=Raising,
                      recording=Recording)
    with caplog.at_level(logging.ERROR, logger="qhive.reporters"):
        failing_task(p)
        assert p.reporting.flush()
    assert len(p.reporting.reporters[1].seen) == 1
    assert any("failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_hanging_reporter_does_not_hold_the_task(make_pipeline):
    p = pipeline_with(make_pipeline, ["hanging"], hanging=Hanging)
    hanging = p.reporting.reporters[0]
    try:
        failing_task(p)  # returns with its result saved while the report is stuck
        assert hanging.entered.wait(10)
        assert not hanging.finished.is_set()
        # Flushing as the process ends is bounded: it gives up and says so.
        assert p.reporting.flush(0.2) is False
    finally:
        hanging.release.set()
    assert hanging.finished.wait(10)
    assert p.reporting.flush(5) is True


def test_reports_beyond_the_backlog_are_counted_not_queued_for_ever(make_pipeline, monkeypatch,
                                                                   caplog):
    monkeypatch.setattr("qhive.reporting.BACKLOG", 2)
    p = pipeline_with(make_pipeline, ["hanging"], hanging=Hanging)
    hanging = p.reporting.reporters[0]
    try:
        with caplog.at_level(logging.ERROR, logger="qhive.reporters"):
            failing_task(p)
            assert hanging.entered.wait(10)  # one taken, stuck; two wait; the fourth drops
            for _ in range(3):
                failing_task(p)
        assert p.reporting.dropped == 1
        assert any("reports dropped" in r.getMessage() for r in caplog.records)
    finally:
        hanging.release.set()
