"""``ResultStoreContract``: what every qhive result store must do.

Subclass it in a test module and supply one fixture, ``make_result_store``: a
callable ``(config: qhive.config.Config) -> ResultStore``::

    class TestMyStore(ResultStoreContract):
        @pytest.fixture
        def make_result_store(self):
            return lambda config: MyStore(config=config)

Each test gets a config with its own cluster ``name``, unique task ids and group
names, and ``stopped`` times later than anything already stored, so a store
shared with other data (one database table) passes too. The suite deletes what
it saved afterwards. A store declaring ``keeps_stats`` is also checked as a place
for cluster statistics (the tests of undeclared capabilities skip, naming them).
:meth:`~qhive.contracts.ResultStore.wait` is checked whether the store polls (the
default) or is woken by its saves: a waiter on another thread returns what is
saved while it waits, by id, name or a group's count, and gives up at its deadline.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from uuid import uuid4

import pytest
from qhive.contracts import ResultStore, TaskResult

from qhive_testkit._util import MARGIN, cleanup, make_config, pickled_copy, skip_unless, unique

PLUS_TWO = dt.timezone(dt.timedelta(hours=2), "contract+02")

#: Results of several types a store must give back unchanged (and of the same type).
RESULT_VALUES = {
    "none": None,
    "false": False,
    "zero": 0,
    "int": 42,
    "float": -7.25,
    "str": "ünïcödé ✓ 日本",
    "bytes": b"\x00\xff binary",
    "list": [1, "a", None, [2.5]],
    "dict": {"k": [1, 2], "nested": {"x": None}},
    "tuple": (1, "two"),
    "datetime": dt.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=dt.UTC),
}


class Results:
    """Makes :class:`TaskResult` objects with unique ids and ever later ``stopped`` times,
    and remembers their ids and groups for cleanup."""

    def __init__(self) -> None:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self._base = now + dt.timedelta(days=1)
        self._tick = itertools.count(1)
        self.ids: list[str] = []
        self.groups: list[str] = []

    def group(self) -> str:
        group = unique("contract-group")
        self.groups.append(group)
        return group

    def make(self, *, success: bool = True, **fields: Any) -> TaskResult:
        stopped = self._base + dt.timedelta(seconds=next(self._tick), microseconds=654321)
        task_id = fields.pop("id", None) or uuid4().hex
        defaults: dict[str, Any] = {
            "id": task_id,
            "name": unique("contract-task"),
            "func": "math.floor",
            "started": stopped - dt.timedelta(seconds=1.5),
            "stopped": stopped,
            "success": success,
            "result": "done" if success else "Traceback (most recent call last): boom",
        }
        self.ids.append(task_id)
        return TaskResult(**{**defaults, **fields})

    def again(self, earlier: TaskResult, **changes: Any) -> TaskResult:
        """A later save of the same task (a retry): new ``stopped``, same id."""
        later = self.make(id=earlier.id, name=earlier.name, group=earlier.group)
        return dataclasses.replace(later, func=earlier.func, started=earlier.started, **changes)


def ids(results: Iterable[TaskResult]) -> list[str]:
    return [r.id for r in results]


#: Seconds between the start of a wait and the save it waits for.
SAVE_AFTER = 0.1


class ReadCounter:
    """Counts the reads of one store instance (``get``, ``get_by_name``, ``count_group``,
    ``get_group``), wrapped with pytest's ``monkeypatch``: what a waiter costs the server.
    A store's own tests use it to prove that ``wait`` does not poll."""

    READS = ("get", "get_by_name", "count_group", "get_group")

    def __init__(self, store: ResultStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for method in self.READS:
            monkeypatch.setattr(store, method, self._counting(getattr(store, method)))

    def _counting(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return method(*args, **kwargs)
        return counted


def _waiting_for(wait: Callable[[], Any], save: Callable[[], Any]) -> Any:
    """What ``wait()`` returns, called on a thread of its own while this one runs
    ``save()`` ``SAVE_AFTER`` seconds later; fails if it has not returned ``MARGIN``
    seconds after the save."""
    answers: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            answers.append(wait())
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    waiter = threading.Thread(target=run, name="contract-waiter", daemon=True)
    waiter.start()
    time.sleep(SAVE_AFTER)
    save()
    waiter.join(MARGIN)
    if errors:
        raise errors[0]
    assert not waiter.is_alive(), f"wait() had not returned {MARGIN} s after the save"
    return answers[0]


def _applies_save_limit(store: ResultStore) -> None:
    if not store.applies_save_limit:
        pytest.skip(f"{type(store).__name__} keeps results until they expire "
                    f"(applies_save_limit = False)")


class ResultStoreContract:
    """The result store contract suite. Subclass as ``TestXxx``, define ``make_result_store``."""

    @pytest.fixture
    def results(self) -> Results:
        return Results()

    @pytest.fixture
    def store_factory(self, make_result_store, results) -> Callable[..., ResultStore]:
        """``(**settings) -> ResultStore`` with its own cluster name and save_limit 0."""
        made: list[ResultStore] = []

        def factory(**settings: Any) -> ResultStore:
            config = make_config(**{"name": unique("contract"), "save_limit": 0, **settings})
            store = make_result_store(config)
            made.append(store)
            return store

        yield factory
        for store in made:
            for group in results.groups:
                cleanup(lambda s=store, g=group: s.delete_group(g), "delete_group()")
            for task_id in results.ids:
                cleanup(lambda s=store, i=task_id: s.delete(i), "delete()")
            cleanup(store.close, "close()")

    @pytest.fixture
    def store(self, store_factory) -> ResultStore:
        return store_factory()

    # -- round trip

    def test_is_a_result_store(self, store):
        assert isinstance(store, ResultStore), f"{type(store).__name__} must subclass ResultStore"

    @pytest.mark.parametrize("value", RESULT_VALUES.values(), ids=RESULT_VALUES.keys())
    def test_round_trip_of_every_field(self, store, results, value):
        original = results.make(
            started=dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=PLUS_TWO),
            result=value,
            args=(1, "two", 3.0, None, [4], {"five": 5}),
            kwargs={"a": 1, "b": [1, 2], "c": {"d": None}, "ü": "✓"},
            hook="qhive_testkit.hooks.noop",
            group=results.group(),
            cluster="contract-cluster",
        )
        expected = dataclasses.replace(original)
        saved = store.save(original)
        assert saved == expected, "save() must return what it stored"
        got = store.get(original.id)
        assert got == expected
        assert type(got.result) is type(value), f"result came back as {type(got.result).__name__}"
        assert type(got.args) is tuple, f"args came back as {type(got.args).__name__}"
        assert type(got.kwargs) is dict
        assert got.started.tzinfo is not None and got.stopped.tzinfo is not None, (
            "datetimes must come back timezone-aware"
        )

    def test_get_unknown_returns_none(self, store):
        assert store.get(uuid4().hex) is None
        assert store.get_by_name(unique("never-saved")) is None

    def test_get_by_name(self, store, results):
        only = results.make()
        store.save(only)
        assert store.get_by_name(only.name) == only
        older = results.make()
        newer = results.make(name=older.name)
        store.save(older)
        store.save(newer)
        assert store.get_by_name(older.name) == newer, "get_by_name() must return the newest"

    def test_stored_results_are_copies(self, store, results):
        original = results.make(kwargs={"items": [1]}, result=[1, 2])
        store.save(original)
        original.kwargs["items"].append("mutated after save")
        original.result.append("mutated after save")
        got = store.get(original.id)
        assert got.kwargs == {"items": [1]} and got.result == [1, 2]
        got.kwargs["items"].append("mutated after get")
        got.result.append("mutated after get")
        again = store.get(original.id)
        assert again.kwargs == {"items": [1]} and again.result == [1, 2]

    # -- the save rules

    def test_a_success_is_final(self, store, results):
        success = results.make(result="first")
        store.save(success)
        failure = results.again(success, success=False, result="late failure")
        kept = store.save(failure)
        assert kept.success and kept.result == "first", "save() must return the stored success"
        got = store.get(success.id)
        assert got.success and got.result == "first" and got.attempt_count == 1
        store.save(results.again(success, success=True, result="second success"))
        assert store.get(success.id).result == "first"

    def test_a_failure_is_replaced_by_a_failure(self, store, results):
        first = results.make(success=False, result="error 1")
        store.save(first)
        second = results.again(first, success=False, result="error 2")
        saved = store.save(second)
        assert saved.attempt_count == 2, "save() must return the updated attempt_count"
        got = store.get(first.id)
        assert (got.success, got.result, got.attempt_count) == (False, "error 2", 2)
        assert got.stopped == second.stopped
        store.save(results.again(first, success=False, result="error 3"))
        assert store.get(first.id).attempt_count == 3

    def test_a_failure_is_replaced_by_a_success(self, store, results):
        failure = results.make(success=False, result="error")
        store.save(failure)
        success = results.again(failure, success=True, result={"finally": "ok"})
        saved = store.save(success)
        assert saved.success and saved.attempt_count == 2
        got = store.get(failure.id)
        assert (got.success, got.result, got.attempt_count) == (True, {"finally": "ok"}, 2)
        assert got.stopped == success.stopped

    def test_next_attempt_is_kept_with_its_failure_and_ends_with_it(self, store, results):
        due = dt.datetime(2030, 1, 2, 5, 4, 5, 678901, tzinfo=PLUS_TWO)
        failure = results.make(success=False, result="error 1", next_attempt=due)
        assert store.save(failure).next_attempt == due
        got = store.get(failure.id).next_attempt
        assert got == due and got.tzinfo is not None, "next_attempt comes back aware"
        later = due + dt.timedelta(seconds=30)
        store.save(results.again(failure, success=False, result="error 2", next_attempt=later))
        got = store.get(failure.id)
        assert (got.attempt_count, got.next_attempt) == (2, later)
        store.save(results.again(failure, success=False, result="final"))
        assert store.get(failure.id).next_attempt is None, "a final failure has no next attempt"
        store.save(results.again(failure, success=True, result="ok"))
        got = store.get(failure.id)
        assert got.success and got.next_attempt is None

    # -- groups

    def test_get_group_newest_first(self, store, results):
        group = results.group()
        made = [results.make(group=group, success=i != 2) for i in range(4)]
        for result in (made[2], made[0], made[3], made[1]):  # save order is not time order
            store.save(result)
        newest_first = made[::-1]
        assert ids(store.get_group(group)) == ids(r for r in newest_first if r.success)
        assert ids(store.get_group(group, failures=True)) == ids(newest_first)
        assert store.get_group(group)[0] == made[3]

    def test_count_group(self, store, results):
        group = results.group()
        for success in (True, True, False):
            store.save(results.make(group=group, success=success))
        store.save(results.make(group=results.group()))
        assert store.count_group(group) == 3, "count_group() counts every task of the group"
        assert store.count_group(group, failures=True) == 1

    def test_unknown_group(self, store):
        group = unique("never-used")
        assert store.get_group(group) == [] and store.get_group(group, failures=True) == []
        assert store.count_group(group) == 0 and store.count_group(group, failures=True) == 0

    # -- deleting

    def test_delete(self, store, results):
        result = results.make()
        store.save(result)
        assert store.delete(result.id) is True
        assert store.get(result.id) is None
        assert store.delete(result.id) is False

    def test_delete_group(self, store, results):
        group, other = results.group(), results.group()
        for success in (True, False, True):
            store.save(results.make(group=group, success=success))
        survivor = results.make(group=other)
        store.save(survivor)
        assert store.delete_group(group) == 3
        assert store.get_group(group, failures=True) == [] and store.count_group(group) == 0
        assert store.get_group(other) == [survivor]
        assert store.delete_group(group) == 0

    # -- save_limit

    def test_pinned_round_trip(self, store, results):
        part = results.make(group=results.group(), pinned=True)
        store.save(part)
        assert store.get(part.id).pinned is True, "pinned must come back as saved"
        assert store.get_group(part.group)[0].pinned is True

    def test_save_limit_keeps_the_newest_successes(self, store_factory, results):
        store = store_factory(save_limit=3)
        _applies_save_limit(store)
        group = results.group()
        failures = [results.make(group=group, success=False) for _ in range(2)]  # the oldest
        successes = [results.make(group=group) for _ in range(5)]
        for result in failures + successes:
            store.save(result)
        assert [store.get(r.id) for r in successes[:2]] == [None, None], (
            "with save_limit=3 the 2 oldest of 5 successes must be gone"
        )
        assert ids(store.get_group(group)) == ids(successes[:1:-1])
        assert all(store.get(r.id) == r for r in failures), "failures are always kept"

    def test_save_limit_minus_one_keeps_no_success(self, store_factory, results):
        store = store_factory(save_limit=-1)
        _applies_save_limit(store)
        success, failure = results.make(), results.make(success=False)
        assert store.save(success) == success, "save() returns the result itself if not kept"
        store.save(failure)
        assert store.get(success.id) is None
        assert store.get(failure.id) == failure, "failures are always kept"

    def test_pinned_results_are_kept_and_not_counted(self, store_factory, results):
        store = store_factory(save_limit=2)
        _applies_save_limit(store)
        group = results.group()
        pinned = [results.make(group=group, pinned=True) for _ in range(3)]  # the oldest
        plain = [results.make(group=group) for _ in range(3)]
        store.save_many(pinned)
        for result in plain:
            store.save(result)
        assert all(store.get(r.id) == r for r in pinned), "pinned results are always kept"
        assert [store.get(r.id) for r in plain] == [None, *plain[1:]], (
            "save_limit=2 keeps the 2 newest unpinned successes; pinned ones do not count"
        )
        minus_one = store_factory(save_limit=-1)
        part = results.make(pinned=True)
        minus_one.save(part)
        assert minus_one.get(part.id) == part, "save_limit=-1 keeps pinned results too"

    def test_applies_save_limit_says_what_the_store_does(self, store_factory, results):
        store = store_factory(save_limit=2)
        made = [results.make() for _ in range(4)]
        for result in made:
            store.save(result)
        if store.applies_save_limit:
            assert store.get(made[0].id) is None, "applies_save_limit: the oldest is pruned"
        else:
            assert [store.get(r.id) for r in made] == made, (
                "a store with applies_save_limit=False keeps every result it is given"
            )

    def test_save_limit_per_group(self, store_factory, results):
        store = store_factory(save_limit=2, save_limit_per="group")
        _applies_save_limit(store)
        one, two = results.group(), results.group()
        made = {one: [], two: []}
        for _ in range(3):
            for group in (one, two):
                result = results.make(group=group)
                made[group].append(result)
                store.save(result)
        failure = results.make(group=one, success=False)
        store.save(failure)
        for group in (one, two):
            assert ids(store.get_group(group)) == ids(made[group][:0:-1]), (
                "save_limit_per='group' keeps save_limit successes in each group"
            )
        assert store.get(failure.id) == failure

    # -- batches and lifecycle

    def test_save_many(self, store, results):
        failed = results.make(success=False, result="error 1")
        store.save(failed)
        batch = [results.make(), results.make(success=False), results.again(failed, result="ok")]
        saved = store.save_many(batch)
        assert isinstance(saved, list) and len(saved) == 3
        assert [store.get(r.id) for r in batch[:2]] == batch[:2]
        retried = store.get(failed.id)
        assert (retried.success, retried.result, retried.attempt_count) == (True, "ok", 2)
        assert saved[2].attempt_count == 2
        assert store.save_many([]) == []

    def test_close_then_use_again(self, store, results):
        result = results.make()
        store.save(result)
        store.close()
        assert store.get(result.id) == result, "a closed store must reconnect"
        store.close()

    def test_pickled_copy_sees_the_same_results(self, store, results):
        result = results.make()
        store.save(result)
        copy = pickled_copy(store, "result store")
        assert copy.get(result.id) == result

    # -- waiting (``wait``: polling by default, woken by the store's saves where it can)

    def test_wait_finds_what_is_there_in_one_look(self, store, results):
        result = results.make()
        store.save(result)
        looks = []

        def look():
            looks.append(1)
            return store.get(result.id)

        assert store.wait(look, time.monotonic() + MARGIN, task_id=result.id) == result
        assert len(looks) == 1, "wait() must return what its first look found"

    def test_wait_with_a_past_deadline_looks_once(self, store, results):
        looks = []
        missing = uuid4().hex

        def look():
            looks.append(1)
            return store.get(missing)

        assert store.wait(look, time.monotonic() - 1, task_id=missing) is None
        assert len(looks) == 1, "a deadline that has passed means one look"

    def test_wait_returns_a_result_saved_while_waiting(self, store, results):
        result = results.make()
        found = _waiting_for(lambda: store.wait(lambda: store.get(result.id),
                                                time.monotonic() + MARGIN, task_id=result.id),
                             lambda: store.save(result))
        assert found == result, f"wait() did not return a result saved {SAVE_AFTER} s later"

    def test_wait_without_deadline_returns_a_result_saved_while_waiting(self, store, results):
        result = results.make()
        found = _waiting_for(lambda: store.wait(lambda: store.get(result.id), None,
                                                task_id=result.id),
                             lambda: store.save(result))
        assert found == result

    def test_wait_by_name(self, store, results):
        result = results.make()
        found = _waiting_for(lambda: store.wait(lambda: store.get_by_name(result.name),
                                                time.monotonic() + MARGIN, name=result.name),
                             lambda: store.save_many([results.make(), result]))
        assert found == result

    def test_wait_for_a_count_of_a_group(self, store, results):
        group = results.group()
        made = [results.make(group=group) for _ in range(3)]

        def save_in_steps():
            store.save_many(made[:2])
            time.sleep(SAVE_AFTER)
            store.save(results.make(group=results.group()))  # another group: no count
            time.sleep(SAVE_AFTER)
            store.save(made[2])

        found = _waiting_for(lambda: store.wait(lambda: store.count_group(group) >= 3 or None,
                                                time.monotonic() + MARGIN, group=group),
                             save_in_steps)
        assert found is True, "wait() for a group's count did not see the last of 3 saves"
        assert ids(store.get_group(group)) == ids(made[::-1])

    def test_wait_gives_up_at_the_deadline(self, store, results):
        other = results.make()
        missing = uuid4().hex
        started = time.monotonic()
        deadline = started + 2 * SAVE_AFTER
        found = _waiting_for(lambda: store.wait(lambda: store.get(missing), deadline,
                                                task_id=missing),
                             lambda: store.save(other))  # a save of another id
        assert found is None
        assert time.monotonic() >= deadline, "wait() returned None before its deadline"

    def test_wait_can_be_repeated(self, store, results):
        """Stores keep what they listen with between waits: it must still work."""
        for _ in range(3):
            result = results.make()
            found = _waiting_for(lambda r=result: store.wait(lambda: store.get(r.id),
                                                             time.monotonic() + MARGIN,
                                                             task_id=r.id),
                                 lambda r=result: store.save(r))
            assert found == result

    # -- statistics (``keeps_stats``): where clusters keep theirs when the broker cannot

    def test_stats_set_and_get(self, store):
        skip_unless(store.keeps_stats, store, "keeps_stats")
        key = unique("qhive:contract:cluster:stat")
        assert store.get_stat(key) is None
        store.set_stat(key, b"\x00first", 120)
        assert store.get_stat(key) == b"\x00first"
        store.set_stat(key, b"second", 120)
        assert store.get_stat(key) == b"second", "set_stat() must replace the value"

    def test_stats_by_prefix(self, store):
        skip_unless(store.keeps_stats, store, "keeps_stats")
        prefix = unique("qhive:contract-a:cluster") + ":"
        other = unique("qhive:contract-b:cluster") + ":"
        store.set_stat(prefix + "a", b"A", 120)
        store.set_stat(prefix + "b", b"B", 120)
        store.set_stat(prefix + "b", b"B2", 120)
        store.set_stat(other + "c", b"C", 120)
        assert sorted(store.get_stats(prefix)) == [b"A", b"B2"]
        assert store.get_stats(unique("qhive:contract-none:cluster") + ":") == []

    def test_stats_expire(self, store):
        skip_unless(store.keeps_stats, store, "keeps_stats")
        prefix = unique("qhive:contract-ttl:cluster") + ":"
        ttl = 1.5
        store.set_stat(prefix + "short", b"short", ttl)
        store.set_stat(prefix + "long", b"long", 120)
        deadline = time.monotonic() + ttl + MARGIN
        while store.get_stat(prefix + "short") is not None:
            assert time.monotonic() < deadline, f"a stat with ttl={ttl} never expired"
            time.sleep(0.1)
        assert store.get_stats(prefix) == [b"long"]
        assert store.get_stat(prefix + "long") == b"long"

    def test_stats_seen_by_a_pickled_copy(self, store):
        skip_unless(store.keeps_stats, store, "keeps_stats")
        key = unique("qhive:contract-copy:cluster") + ":x"
        store.set_stat(key, b"shared", 120)
        copy = pickled_copy(store, "result store")
        assert copy.get_stat(key) == b"shared", "stats must be visible to other processes"
