"""``ReporterContract``: what every qhive error reporter must do.

Subclass it in a test module and supply one fixture, ``make_reporter``: a
callable ``() -> Reporter``::

    class TestMyReporter(ReporterContract):
        @pytest.fixture
        def make_reporter(self, local_server):
            return lambda: MyReporter(dsn=local_server.url)

The one rule: :meth:`Reporter.report` never raises, whatever the error and the
task look like, because a broken reporter must not turn into a lost result.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest
from qhive.contracts import Reporter

from qhive_testkit._util import pickled_copy


class Hostile:
    """A value that breaks ``repr``, ``str``, pickling and comparison."""

    def __repr__(self) -> str:
        raise RuntimeError("Hostile.__repr__ raised")

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("Hostile cannot be pickled")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("Hostile.__eq__ raised")

    __hash__ = object.__hash__


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("UnprintableError.__str__ raised")

    __repr__ = __str__


def task(**changes: Any) -> dict[str, Any]:
    """A task package like the ones the cluster passes to reporters."""
    return {
        "id": "0f8fad5bd9cb469fa16570867728950e",
        "name": "victor-hotel-seven-alpha",
        "func": "myapp.tasks.explode",
        "args": (1, "two"),
        "kwargs": {"three": 3},
        "group": None,
        **changes,
    }


def raised(error: BaseException) -> BaseException:
    """``error`` after it was raised and caught, so it carries a traceback."""
    try:
        raise error
    except BaseException as caught:
        return caught


def assert_reports(reporter: Reporter, error: BaseException, task: Mapping | None) -> None:
    try:
        reporter.report(error, task)
    except BaseException as exc:  # KeyboardInterrupt too: it must not escape
        pytest.fail(
            f"{type(reporter).__name__}.report({type(error).__name__}) raised "
            f"{type(exc).__name__}: report() must never raise",
            pytrace=False,
        )


class ReporterContract:
    """The reporter contract suite. Subclass as ``TestXxx``, define ``make_reporter``."""

    @pytest.fixture
    def reporter(self, make_reporter) -> Reporter:
        return make_reporter()

    def test_is_a_reporter(self, reporter):
        assert isinstance(reporter, Reporter), f"{type(reporter).__name__} must subclass Reporter"

    def test_report_inside_an_except_block(self, reporter):
        try:
            {}["missing"]
        except KeyError as error:
            assert_reports(reporter, error, task())

    def test_report_outside_an_except_block(self, reporter):
        assert_reports(reporter, raised(ValueError("raised earlier")), task())

    def test_report_an_error_that_was_never_raised(self, reporter):
        assert_reports(reporter, RuntimeError("no traceback"), task())

    def test_report_a_chained_error(self, reporter):
        try:
            try:
                1 / 0  # noqa: B018
            except ZeroDivisionError as cause:
                raise LookupError("while handling") from cause
        except LookupError as error:
            assert_reports(reporter, error, task())

    def test_report_without_a_task(self, reporter):
        assert_reports(reporter, raised(ValueError("no task")), None)

    def test_report_with_a_minimal_task(self, reporter):
        assert_reports(reporter, raised(ValueError("bare task")), {})

    def test_report_with_hostile_task_values(self, reporter):
        hostile = task(
            id=Hostile(),
            name=Hostile(),
            func=Hostile(),
            args=(Hostile(), lambda: None, threading.Lock()),
            kwargs={"hostile": Hostile(), "lock": threading.Lock()},
            result=Hostile(),
        )
        assert_reports(reporter, raised(ValueError("hostile task")), hostile)

    def test_report_an_error_whose_str_raises(self, reporter):
        assert_reports(reporter, raised(UnprintableError()), task())

    @pytest.mark.parametrize(
        "error",
        [KeyboardInterrupt(), SystemExit(3), GeneratorExit()],
        ids=["KeyboardInterrupt", "SystemExit", "GeneratorExit"],
    )
    def test_report_a_base_exception(self, reporter, error):
        assert_reports(reporter, raised(error), task())

    def test_reporter_pickles(self, reporter):
        copy = pickled_copy(reporter, "reporter")
        assert_reports(copy, raised(ValueError("from the copy")), task())
