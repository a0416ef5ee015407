"""The contract suites are tested by running them, with pytester, against small
drivers: a correct one must pass, deliberately broken ones must fail."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


class Outcomes(dict):
    """``{"TestClass::test_name[param]": "passed" | "failed" | "skipped"}`` of one run."""

    def of(self, cls: str) -> dict[str, str]:
        return {k.split("::", 1)[1]: v for k, v in self.items() if k.startswith(cls + "::")}

    def failed(self, cls: str) -> set[str]:
        return {k for k, v in self.of(cls).items() if v == "failed"}

    def not_passed(self, cls: str) -> dict[str, str]:
        return {k: v for k, v in self.of(cls).items() if v != "passed"}


@pytest.fixture
def run_contract(pytester):
    """Run a test module in-process and return the outcome of every test.

    A test whose setup, call or teardown failed counts as failed.
    """

    def run(source: str, *args: str, **modules: str) -> Outcomes:
        if modules:
            pytester.makepyfile(**modules)
            pytester.syspathinsert()
        pytester.makepyfile(test_contract=source)
        recorder = pytester.inline_run("-p", "no:cacheprovider", *args)
        outcomes = Outcomes()
        for report in recorder.getreports("pytest_runtest_logreport"):
            name = report.nodeid.split("::", 1)[1]
            if report.failed:
                outcomes[name] = "failed"
            elif report.skipped and outcomes.get(name) != "failed":
                outcomes[name] = "skipped"
            else:
                outcomes.setdefault(name, "passed")
        assert outcomes, "the contract run collected no tests"
        return outcomes

    return run
