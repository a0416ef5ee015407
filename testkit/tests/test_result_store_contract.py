"""ResultStoreContract passes a correct store and fails broken ones."""

SOURCE = '''
import copy
import dataclasses
import threading
import time

import pytest

from qhive.contracts import ResultStore
from qhive_testkit import ResultStoreContract

STORES = {}
STATS = {}


class DictStore(ResultStore):
    """Correct and minimal: one dict per cluster name, copies in and out."""

    @property
    def data(self):
        return STORES.setdefault(self.config.name, {})

    def save(self, result):
        old = self.data.get(result.id)
        if old is not None and old.success:
            return copy.deepcopy(old)
        if result.success and self.config.save_limit < 0 and not result.pinned:
            return result
        new = copy.deepcopy(result)
        if old is not None:
            new.attempt_count = old.attempt_count + 1
        self.data[new.id] = new
        if new.success and self.config.save_limit > 0 and not new.pinned:
            self._prune(new)
        return copy.deepcopy(self.data.get(new.id, result))

    def _prune(self, new):
        per = self.config.save_limit_per
        same = [r for r in self.data.values() if r.success and not self._exempt(r)
                and (per is None or getattr(r, per) == getattr(new, per))]
        for old in self._newest(same)[self.config.save_limit:]:
            del self.data[old.id]

    @staticmethod
    def _exempt(result):
        return result.pinned

    @staticmethod
    def _newest(results):
        return sorted(results, key=lambda r: r.stopped, reverse=True)

    def get(self, task_id):
        return copy.deepcopy(self.data.get(task_id))

    def get_by_name(self, name):
        found = self._newest(r for r in self.data.values() if r.name == name)
        return copy.deepcopy(found[0]) if found else None

    def get_group(self, group, *, failures=False):
        return copy.deepcopy(self._newest(
            r for r in self.data.values() if r.group == group and (failures or r.success)))

    def count_group(self, group, *, failures=False):
        return sum(1 for r in self.data.values()
                   if r.group == group and not (failures and r.success))

    def delete(self, task_id):
        return self.data.pop(task_id, None) is not None

    def delete_group(self, group):
        doomed = [i for i, r in self.data.items() if r.group == group]
        for task_id in doomed:
            del self.data[task_id]
        return len(doomed)

    keeps_stats = True

    def set_stat(self, key, value, ttl):
        STATS[key] = (value, time.monotonic() + ttl)

    def get_stat(self, key):
        value, until = STATS.get(key, (None, 0))
        return value if until > time.monotonic() else None

    def get_stats(self, prefix):
        return [v for k in STATS if k.startswith(prefix) and (v := self.get_stat(k))]


class OverwritesSuccesses(DictStore):
    """Broken: every save replaces what is stored, and keeps the caller's object."""

    def save(self, result):
        self.data[result.id] = result
        return result


class IgnoresSaveLimit(DictStore):
    def _prune(self, new):
        pass


class PrunesPinned(DictStore):
    """Broken: pinned results count towards save_limit and are pruned."""

    @staticmethod
    def _exempt(result):
        return False


class CountsOnlySuccesses(DictStore):
    """Broken: count_group(failures=False) leaves failures out."""

    def count_group(self, group, *, failures=False):
        return sum(1 for r in self.data.values() if r.group == group and r.success != failures)


class KeepsFirstNextAttempt(DictStore):
    """Broken: a replaced failure keeps the next_attempt it was first saved with."""

    def save(self, result):
        old = self.data.get(result.id)
        if old is not None and not old.success:
            result = dataclasses.replace(result, next_attempt=old.next_attempt)
        return super().save(result)


class NeverWaits(DictStore):
    """Broken: wait() looks once and gives up, whatever the deadline."""

    def wait(self, look, deadline, **about):
        return look()


class WokenBySaves(DictStore):
    """Correct: wait() sleeps on a condition that every save notifies (no polling)."""

    saved = threading.Condition()

    def save(self, result):
        stored = super().save(result)
        with self.saved:
            self.saved.notify_all()
        return stored

    def wait(self, look, deadline, **about):
        with self.saved:
            found = look()
            while found is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self.saved.wait(remaining)
                found = look()
            return found


class TestGood(ResultStoreContract):
    @pytest.fixture
    def make_result_store(self):
        return lambda config: DictStore(config=config)


class TestWokenBySaves(ResultStoreContract):
    @pytest.fixture
    def make_result_store(self):
        return lambda config: WokenBySaves(config=config)


class TestNeverWaits(ResultStoreContract):
    @pytest.fixture
    def make_result_store(self):
        return lambda config: NeverWaits(config=config)


class TestOverwritesSuccesses(ResultStoreContract):
    @pytest.fixture
    def make_result_store(self):
        return lambda config: OverwritesSuccesses(config=config)


class TestIgnoresSaveLimit(ResultStoreContract):
    @pytest.fixture
    def make_result_store(self):
        return lambda config: IgnoresSaveLimit(config=config)


class TestPrunesPinned(ResultStoreContract):
    @pytest.fixture
    def make_result_store(self):
        return lambda config: PrunesPinned(config=config)


class TestCountsOnlySuccesses(ResultStoreContract):
    @pytest.fixture
    def make_result_store(self):
        return lambda config: CountsOnlySuccesses(config=config)


class TestKeepsFirstNextAttempt(ResultStoreContract):
    @pytest.fixture
    def make_result_store(self):
        return lambda config: KeepsFirstNextAttempt(config=config)
'''


def test_result_store_contract(run_contract):
    outcomes = run_contract(SOURCE)
    assert outcomes.not_passed("TestGood") == {}
    assert outcomes.not_passed("TestWokenBySaves") == {}
    assert outcomes.failed("TestNeverWaits") == {
        "test_wait_returns_a_result_saved_while_waiting",
        "test_wait_without_deadline_returns_a_result_saved_while_waiting",
        "test_wait_by_name",
        "test_wait_for_a_count_of_a_group",
        "test_wait_gives_up_at_the_deadline",
        "test_wait_can_be_repeated",
    }
    assert {
        "test_a_success_is_final",
        "test_a_failure_is_replaced_by_a_failure",
        "test_a_failure_is_replaced_by_a_success",
        "test_save_limit_minus_one_keeps_no_success",
        "test_stored_results_are_copies",
    } <= outcomes.failed("TestOverwritesSuccesses")
    assert outcomes.failed("TestIgnoresSaveLimit") == {
        "test_save_limit_keeps_the_newest_successes",
        "test_save_limit_per_group",
        "test_pinned_results_are_kept_and_not_counted",
        "test_applies_save_limit_says_what_the_store_does",
    }
    assert outcomes.failed("TestPrunesPinned") == {"test_pinned_results_are_kept_and_not_counted"}
    assert outcomes.failed("TestCountsOnlySuccesses") == {"test_count_group"}
    assert outcomes.failed("TestKeepsFirstNextAttempt") == {
        "test_next_attempt_is_kept_with_its_failure_and_ends_with_it"}
