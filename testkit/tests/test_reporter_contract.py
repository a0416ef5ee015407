"""ReporterContract passes a correct reporter and fails broken ones."""

SOURCE = '''
import threading
import traceback

import pytest

from qhive.contracts import Reporter
from qhive_testkit import ReporterContract


class Collects(Reporter):
    """Correct: keeps a formatted line per error, guarding every step."""

    lines = []

    def report(self, error, task=None):
        try:
            text = "".join(traceback.format_exception(error))
            try:
                name = str(task.get("name")) if task else "?"
            except Exception:
                name = "?"
            self.lines.append(f"{name}: {text}")
        except Exception:
            pass


class NaiveRepr(Reporter):
    """Broken: formats the task with repr()."""

    def report(self, error, task=None):
        Collects.lines.append(f"{error!r} in {task!r}")


class PassesOnInterrupts(Reporter):
    """Broken: re-raises what is not an ordinary exception."""

    def report(self, error, task=None):
        if not isinstance(error, Exception):
            raise error


class HoldsALock(Collects):
    """Broken: cannot be pickled."""

    def __init__(self, **options):
        super().__init__(**options)
        self.lock = threading.Lock()


class TestGood(ReporterContract):
    @pytest.fixture
    def make_reporter(self):
        return Collects


class TestNaiveRepr(ReporterContract):
    @pytest.fixture
    def make_reporter(self):
        return NaiveRepr


class TestPassesOnInterrupts(ReporterContract):
    @pytest.fixture
    def make_reporter(self):
        return PassesOnInterrupts


class TestHoldsALock(ReporterContract):
    @pytest.fixture
    def make_reporter(self):
        return HoldsALock
'''


def test_reporter_contract(run_contract):
    outcomes = run_contract(SOURCE)
    assert outcomes.not_passed("TestGood") == {}
    assert outcomes.failed("TestNaiveRepr") == {
        "test_report_with_hostile_task_values",
        "test_report_an_error_whose_str_raises",
    }
    assert outcomes.failed("TestPassesOnInterrupts") == {
        "test_report_a_base_exception[KeyboardInterrupt]",
        "test_report_a_base_exception[SystemExit]",
        "test_report_a_base_exception[GeneratorExit]",
    }
    assert outcomes.failed("TestHoldsALock") == {"test_reporter_pickles"}
