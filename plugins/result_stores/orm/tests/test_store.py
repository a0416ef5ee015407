"""What the ORM result store does beyond the contract: signed storage, unencodable
values, batched writes with few queries, pruning, and races with other writers.
Each test runs on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import pickle
import threading

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from qhive.builtin.serializers import JsonSerializer, PickleSerializer
from qhive.config import Config
from qhive.drivers import load_driver
from qhive_store_orm.codec import UnreadableValue
from qhive_store_orm.fields import Encoded
from qhive_store_orm.store import OrmResultStore
from qhive_testkit.result_store import Results


def task_model():
    """The model, imported once ``django_project`` has set Django up."""
    from qhive_store_orm.models import Task

    return Task


@pytest.fixture
def results(database):
    """Unique ids, groups and ever later ``stopped`` times; deleted afterwards."""
    made = Results()
    yield made
    tasks = task_model().objects.using(database)
    tasks.filter(id__in=made.ids).delete()
    tasks.filter(group__in=made.groups).delete()


@pytest.fixture
def make_store(database):
    def make(**settings) -> OrmResultStore:
        config = Config.from_dict({"save_limit": 0, **settings})
        return OrmResultStore(config=config, database=database)

    return make


@pytest.fixture
def store(make_store):
    return make_store()


def stored_bytes(database, task_id, column="result"):
    with connections[database].cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM qhive_task WHERE id = %s", [task_id])
        return bytes(cursor.fetchone()[0])


def overwrite(database, task_id, **columns):
    task_model().objects.using(database).filter(id=task_id).update(
        **{name: Encoded(value) for name, value in columns.items()})


class Evil:
    """A pickle that runs code when loaded: it creates the folder ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


# --------------------------------------------------------------------------- signed storage


def test_values_are_stored_signed_not_as_pickles(store, results, database):
    result = results.make(result={"answer": 42}, args=(1,), kwargs={"k": "v"})
    store.save(result)
    raw = stored_bytes(database, result.id)
    assert not raw.startswith(b"\x80"), "the column must not hold a bare pickle"
    assert store.codec.decode(raw) == {"answer": 42}


def test_tampered_values_never_reach_the_deserializer(store, results, database, monkeypatch):
    result = results.make(result={"answer": 42}, args=(1, 2), kwargs={"k": "v"})
    store.save(result)
    tampered = {}
    for column in ("args", "kwargs", "result"):
        raw = bytearray(stored_bytes(database, result.id, column))
        raw[-1] ^= 0x01  # flip one bit of the serialized body
        tampered[column] = bytes(raw)
    overwrite(database, result.id, **tampered)

    fed = []
    monkeypatch.setattr(PickleSerializer, "loads", lambda self, data: fed.append(data))
    got = store.get(result.id)
    model = task_model().objects.using(database).get(id=result.id)
    assert fed == [], "tampered bytes were handed to the deserializer"
    for value in (got.result, got.args, got.kwargs, model.result, model.args):
        assert isinstance(value, UnreadableValue)
        assert "signature" in value.reason
    assert "failed signature verification" in repr(got.result)


def test_a_forged_pickle_is_never_unpickled(store, results, database, tmp_path):
    result = results.make()
    store.save(result)
    forged = pickle.dumps(Evil(tmp_path / "pwned"))
    overwrite(database, result.id, result=forged, args=b"\x01" + b"\x00" * 32 + forged)
    got = store.get(result.id)
    task_model().objects.using(database).get(id=result.id).result  # noqa: B018 -- the model reads too
    assert not (tmp_path / "pwned").exists(), "a pickle written to the table was executed"
    assert isinstance(got.result, UnreadableValue) and isinstance(got.args, UnreadableValue)


def test_rows_of_another_key_or_cluster_name_are_unreadable(make_store, results, database):
    result = results.make(result="secret")
    OrmResultStore(config=Config.from_dict({"save_limit": 0}, secret_key="another key"),
                   database=database).save(result)
    got = make_store().get(result.id)
    assert isinstance(got.result, UnreadableValue), "verified with the wrong key"
    other_name = make_store(name="another-project").get(result.id)
    assert isinstance(other_name.result, UnreadableValue), "the cluster name is the salt"


def test_key_rotation_keeps_stored_results_readable(make_store, results, database):
    result = results.make(result="kept")
    make_store().save(result)  # signed with the settings' SECRET_KEY
    rotated = OrmResultStore(
        config=Config.from_dict({"save_limit": 0}, secret_key="the new key",
                                secret_key_fallbacks=["qhive-test-secret-key"]),
        database=database,
    )
    assert rotated.get(result.id).result == "kept"


def test_rows_of_an_alt_cluster_with_another_serializer_read_back(results, database):
    q_cluster = {"save_limit": 0, "ALT_CLUSTERS": {"plain": {"serializer": "json"}}}
    root = OrmResultStore(config=Config.from_dict(q_cluster, secret_key="k"), database=database)
    alt = OrmResultStore(config=Config.from_dict(q_cluster, cluster="plain", secret_key="k"),
                         database=database)
    by_alt = results.make(result=(1, "alt"))
    alt.save(by_alt)
    assert stored_bytes(database, by_alt.id).find(b"json") > 0, "the alt cluster wrote json"
    assert root.get(by_alt.id) == by_alt == alt.get(by_alt.id)


# --------------------------------------------------------------------------- unencodable values


def test_an_unserializable_result_becomes_a_stored_failure(make_store, results):
    store = make_store(serializer="json")
    result = results.make(result=object(), args=(1,))
    saved = store.save(result)
    assert saved.success is False
    assert "could not store the result" in saved.result and "json serializer" in saved.result
    assert "object object at" in saved.result, "the message shows what the task returned"
    assert store.get(result.id) == saved


def test_an_unpicklable_result_becomes_a_stored_failure(store, results):
    result = results.make(result=threading.Lock())
    saved = store.save(result)
    got = store.get(result.id)
    assert got == saved and got.success is False
    assert "pickle serializer cannot serialize" in got.result and "lock" in got.result


def test_unserializable_args_are_stored_as_reprs(make_store, results):
    store = make_store(serializer="json")
    result = results.make(result="fine", args=(1, object()), kwargs={"ok": 1, "bad": {1, object}})
    saved = store.save(result)
    got = store.get(result.id)
    assert got == saved and got.success is True and got.result == "fine"
    assert got.args[0] == "1" and got.args[1].startswith("<object object at")
    assert got.kwargs["ok"] == "1" and "object" in got.kwargs["bad"]


def test_one_unserializable_result_does_not_spoil_the_batch(make_store, results):
    store = make_store(serializer="json")
    good, bad = results.make(result=[1, 2]), results.make(result=JsonSerializer())
    store.save_many([good, bad])
    assert store.get(good.id) == good
    assert store.get(bad.id).success is False


# --------------------------------------------------------------------------- batches


def count_queries(database, action):
    with CaptureQueriesContext(connections[database]) as queries:
        action()
    return len(queries.captured_queries)


@pytest.mark.parametrize("settings", [
    {"save_limit": 0},
    {"save_limit": 20, "save_limit_per": "group"},
], ids=["unlimited", "limit-per-group"])
def test_save_many_takes_a_constant_number_of_queries(make_store, results, database, settings):
    store = make_store(**settings)
    group = results.group()

    def batch(size):
        """New successes and failures, and retries (now successes) of stored failures."""
        failed = [results.make(group=group, success=False) for _ in range(size // 10)]
        store.save_many(failed)
        made = [results.make(group=group, success=i % 7 != 0) for i in range(size - len(failed))]
        return made + [results.again(f, success=True, result="retried") for f in failed]

    first = batch(50)
    store.save_many(first)  # with a limit, the next batches prune as much as this one
    small, large = batch(50), batch(500)
    small_count = count_queries(database, lambda: store.save_many(small))
    large_count = count_queries(database, lambda: store.save_many(large))
    assert large_count <= 10, f"save_many(500) took {large_count} queries"
    assert large_count == small_count, "the number of queries must not grow with the batch"
    successes = store.count_group(group) - store.count_group(group, failures=True)
    assert successes == (settings["save_limit"] or sum(r.success for r in first + small + large))


def test_a_batch_applies_the_save_rules_in_order(store, results):
    first = results.make(success=False, result="error 1")
    second = results.again(first, success=False, result="error 2")
    third = results.again(first, success=True, result="ok")
    late = results.again(first, success=False, result="too late")
    saved = store.save_many([first, second, third, late])
    assert [s.attempt_count for s in saved] == [1, 2, 3, 3]
    assert saved[3].result == "ok", "a success is final, also within one batch"
    got = store.get(first.id)
    assert (got.success, got.result, got.attempt_count) == (True, "ok", 3)


def test_save_many_returns_what_is_stored(store, results):
    done = results.make(result="first")
    store.save(done)
    saved = store.save_many([results.again(done, result="again"), results.make(result="new")])
    assert saved[0].result == "first" and saved[0].id == done.id
    assert saved[1].result == "new"


# --------------------------------------------------------------------------- pruning


def test_a_batch_larger_than_the_limit_keeps_the_newest(make_store, results):
    store = make_store(save_limit=5, save_limit_per="group")
    group = results.group()
    failure = results.make(group=group, success=False)
    batch = [failure] + [results.make(group=group) for _ in range(20)]
    saved = store.save_many(batch[::-1])  # order of the batch is not time order
    assert [r.id for r in store.get_group(group)] == [r.id for r in batch[:-6:-1]]
    assert store.get(failure.id) == failure, "failures are always kept"
    assert saved[-1] == failure and saved[0] == batch[-1]
    assert sum(store.get(r.id) is not None for r in batch) == 6


def test_lowering_save_limit_shrinks_at_once(make_store, results):
    group = results.group()
    make_store().save_many([results.make(group=group) for _ in range(12)])
    newest = results.make(group=group)
    make_store(save_limit=3, save_limit_per="group").save(newest)
    kept = [r.id for r in make_store().get_group(group)]
    assert len(kept) == 3 and kept[0] == newest.id


@pytest.mark.parametrize("per", ["name", "func"])
def test_save_limit_per_name_and_func(make_store, results, per):
    store = make_store(save_limit=2, save_limit_per=per)
    group = results.group()
    shared = {"name": "shared-" + group, "func": "mod.func_" + group[-12:]}
    mine = [results.make(group=group, **{per: shared[per]}) for _ in range(4)]
    others = [results.make(group=group, **{per: f"{per}-{i}-{group}"})  # each alone
              for i in range(3)]
    store.save_many(mine[:2] + others)
    store.save_many(mine[2:])
    kept = {r.id for r in store.get_group(group)}
    assert kept == {mine[3].id, mine[2].id, *(r.id for r in others)}


def test_save_limit_minus_one_leaves_a_stored_failure(make_store, results):
    failure = results.make(success=False)
    make_store().save(failure)
    store = make_store(save_limit=-1)
    success = results.again(failure, success=True, result="ok")
    assert store.save(success) is success
    assert store.get(failure.id) == failure


# --------------------------------------------------------------------------- races


def test_a_row_inserted_by_another_writer_is_retried(store, results, monkeypatch):
    failure = results.make(success=False, result="error 1")
    store.save(failure)
    real = OrmResultStore._existing
    calls = []

    def stale(self, alias, ids):  # the first read misses the row another process wrote
        calls.append(ids)
        return {} if len(calls) == 1 else real(self, alias, ids)

    monkeypatch.setattr(OrmResultStore, "_existing", stale)
    saved = store.save(results.again(failure, success=False, result="error 2"))
    assert len(calls) == 2 and saved.attempt_count == 2
    assert store.get(failure.id).attempt_count == 2


def test_a_failure_updated_by_another_writer_is_retried(store, results, monkeypatch):
    failure = results.make(success=False, result="error 1")
    store.save(failure)
    store.save(results.again(failure, success=False, result="error 2"))
    real = OrmResultStore._existing
    calls = []

    def stale(self, alias, ids):  # the first read sees the attempt count of before
        calls.append(ids)
        found = real(self, alias, ids)
        return {i: (s, 1) for i, (s, _) in found.items()} if len(calls) == 1 else found

    monkeypatch.setattr(OrmResultStore, "_existing", stale)
    saved = store.save(results.again(failure, success=False, result="error 3"))
    assert len(calls) == 2 and saved.attempt_count == 3
    got = store.get(failure.id)
    assert (got.result, got.attempt_count) == ("error 3", 3)


# --------------------------------------------------------------------------- the driver


def test_the_orm_entry_point_is_this_store():
    assert load_driver("result_store", "orm") is OrmResultStore


def test_without_a_config_the_store_reads_django_settings(results, database):
    store = OrmResultStore(database=database)
    assert store.config.name == "default" and store.config.secret_key == "qhive-test-secret-key"
    result = results.make(result={"via": "settings"})
    store.save(result)
    assert task_model().objects.using(database).get(id=result.id).result == {"via": "settings"}


def test_the_database_is_routed_when_not_given(django_project):
    store = OrmResultStore(config=Config.from_dict({"save_limit": 0}))
    assert store.alias == "default"
    result = Results().make()
    store.save(result)
    assert store.get(result.id) == result
    assert task_model().objects.filter(id=result.id).exists()
    assert store.delete(result.id)


def test_a_pickled_store_builds_its_codec_again(store, results):
    store.save(results.make())
    copy = pickle.loads(pickle.dumps(store))
    assert copy._codec is None and copy.database == store.database
    result = results.make()
    copy.save(result)
    assert store.get(result.id) == result


def test_long_strings_are_cut_not_lost(store, results):
    result = results.make(name="n" * 300, func="f" * 300, cluster="c" * 300)
    saved = store.save(result)
    got = store.get(result.id)
    assert got == saved and len(got.name) == 100 and len(got.func) == 256
    assert dataclasses.replace(got, name=result.name, func=result.func,
                               cluster=result.cluster) == result


def test_a_conflict_inside_a_callers_transaction_is_retried(store, results, database,
                                                            monkeypatch):
    from django.db import transaction

    failure = results.make(success=False)
    store.save(failure)
    real, calls = OrmResultStore._existing, []

    def stale(self, alias, ids):
        calls.append(ids)
        return {} if len(calls) == 1 else real(self, alias, ids)

    monkeypatch.setattr(OrmResultStore, "_existing", stale)
    with transaction.atomic(using=database):  # as with sync=True inside a request
        saved = store.save(results.again(failure, success=True, result="ok"))
        assert store.get(failure.id).result == "ok"
    assert saved.attempt_count == 2 and len(calls) == 2
    assert store.get(failure.id).attempt_count == 2


def test_concurrent_writers_and_pruning(make_store, results, database):
    store = make_store(save_limit=30, save_limit_per="group")
    group = results.group()
    batches = [[results.make(group=group, success=i % 5 != 0) for i in range(40)]
               for _ in range(8)]
    errors = []

    def write(mine):
        try:
            for batch in mine:
                store.save_many(batch)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(batches[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    failures = sum(not r.success for batch in batches for r in batch)
    assert store.count_group(group, failures=True) == failures, "failures are always kept"
    store.save(results.make(group=group))  # a last batch prunes whatever a race left over
    assert store.count_group(group) - failures == 30


def test_new_results_are_saved_in_one_statement(store, results, database):
    """PostgreSQL and SQLite: no read and no transaction around a batch of new results
    (the announcement, on PostgreSQL, rides in the same statement)."""
    vendor = connections[database].vendor
    batch = [results.make(success=i % 3 != 0) for i in range(40)]
    count = count_queries(database, lambda: store.save_many(batch))
    assert count == 1 if vendor in ("postgresql", "sqlite") else count > 1
    assert [store.get(r.id) for r in batch] == batch


def test_a_batch_of_new_results_and_retries_applies_the_rules(store, results):
    failure = results.make(success=False, result="error 1")
    success = results.make(result="first")
    store.save_many([failure, success])
    retried = results.again(failure, success=True, result="ok")
    repeated = results.again(success, result="second")
    new = results.make(result="new")
    saved = store.save_many([retried, new, repeated])
    assert [(s.id, s.result, s.attempt_count) for s in saved] == [
        (failure.id, "ok", 2), (new.id, "new", 1), (success.id, "first", 1)]
    assert store.get(failure.id).result == "ok" and store.get(success.id).result == "first"


def test_next_attempt_is_written_by_every_path(store, results, database):
    """The one-statement insert (VALUES for one row, arrays for a large PostgreSQL batch,
    some next_attempt null, some not), the update of stored failures, and the raw get."""
    due = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    batch = [results.make(success=i % 4 == 0, next_attempt=None if i % 2 else
                          (due + dt.timedelta(seconds=i, microseconds=i)).astimezone(plus_two))
             for i in range(40)]
    batch = [dataclasses.replace(r, next_attempt=None) if r.success else r for r in batch]
    assert store.save_many(batch) == batch
    assert [store.get(r.id) for r in batch] == batch
    assert {store.get(r.id).next_attempt.utcoffset() for r in batch if r.next_attempt} == {
        dt.timedelta(0)}, "aware UTC back"

    failures = [r for r in batch if not r.success]
    retries = [results.again(r, success=False, next_attempt=None if i % 3 else due)
               for i, r in enumerate(failures)]
    saved = store.save_many(retries)
    assert [(s.next_attempt, s.attempt_count) for s in saved] == [
        (r.next_attempt, 2) for r in retries]
    assert [store.get(r.id).next_attempt for r in retries] == [r.next_attempt for r in retries]
    assert store.get_many(r.id for r in retries) == {s.id: s for s in saved}

    one = results.make(success=False, next_attempt=due)
    count = count_queries(database, lambda: store.save(one))
    assert count == 1 if connections[database].vendor in ("postgresql", "sqlite") else count > 1
    assert store.get(one.id).next_attempt == due
