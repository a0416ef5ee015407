"""``OrmResultStore.wait`` (``result(wait=…)``): on PostgreSQL woken by the saving
transaction's ``NOTIFY`` instead of polling — proved by counting the looks — with the
deadline honoured, group counts, a lost LISTEN connection and the payload limit; on a
SQLite file woken by the database's doorbell, rung at commit; on MariaDB (and on
PostgreSQL while it cannot LISTEN) it polls."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import pytest
from django.db import connections, transaction
from qhive.config import Config
from qhive_broker_orm.doorbell import doorbell_of
from qhive_broker_orm.listen import Listener
from qhive_store_orm import waiting
from qhive_store_orm.store import OrmResultStore
from qhive_testkit.result_store import ReadCounter, Results

#: Seconds after the start of a wait that the awaited result is saved.
LATER = 1.0


@pytest.fixture
def results(database):
    """Unique ids, groups and ever later ``stopped`` times; deleted afterwards."""
    from qhive_store_orm.models import Task

    made = Results()
    yield made
    tasks = Task.objects.using(database)
    tasks.filter(id__in=made.ids).delete()
    tasks.filter(group__in=made.groups).delete()


@pytest.fixture
def store(database):
    made = OrmResultStore(config=Config.from_dict({"save_limit": 0}), database=database)
    yield made
    made.close()


@pytest.fixture
def postgres(database):
    if database != "postgres":
        pytest.skip("NOTIFY / LISTEN: PostgreSQL only")
    return database


@pytest.fixture
def polling(database):
    if database != "mysql":
        pytest.skip("MariaDB polls")
    return database


@pytest.fixture
def sqlite(database):
    if database != "default":
        pytest.skip("the doorbell: SQLite only")
    return database


def later(seconds: float, action) -> threading.Thread:
    """Run ``action`` on a thread of its own (a Django connection of its own, closed
    afterwards) ``seconds`` from now: a cluster saving."""
    def run():
        time.sleep(seconds)
        try:
            action()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def in_thread(wait) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []

    def run():
        try:
            answers.append(wait())
        finally:
            connections.close_all()

    waiter = threading.Thread(target=run, daemon=True)
    waiter.start()
    return waiter, answers


# --------------------------------------------------------------------------- PostgreSQL


def test_a_waiter_is_woken_by_the_save_and_does_not_poll(store, results, postgres,
                                                          monkeypatch):
    result, unrelated = results.make(), results.make()
    looks = ReadCounter(store, monkeypatch)
    later(LATER / 2, lambda: store.save(unrelated))  # wakes nobody
    saver = later(LATER, lambda: store.save(result))
    found = store.wait(lambda: store.get(result.id), time.monotonic() + 30, task_id=result.id)
    saver.join()
    assert found == result
    # Polling (5 ms doubling to 250 ms) would have looked about 9 times in a second.
    assert looks.count == 2, "one look once listening, one after the save"


def test_the_deadline_is_honoured(store, results, postgres, monkeypatch):
    looks = ReadCounter(store, monkeypatch)
    missing = results.make().id
    deadline = time.monotonic() + LATER / 2
    assert store.wait(lambda: store.get(missing), deadline, task_id=missing) is None
    assert time.monotonic() >= deadline
    assert looks.count == 1, "no look while sleeping: the deadline ends the wait"


def test_waiting_for_a_group_count_looks_once_per_batch_of_the_group(store, results, postgres,
                                                                       monkeypatch):
    group = results.group()
    looks = ReadCounter(store, monkeypatch)

    def save_in_batches():
        store.save_many([results.make(group=group), results.make(group=group)])
        time.sleep(0.2)
        store.save_many([results.make() for _ in range(3)])  # not this group: no look
        time.sleep(0.2)
        store.save(results.make(group=group))

    saver = later(LATER, save_in_batches)
    found = store.wait(lambda: store.count_group(group) >= 3 or None, time.monotonic() + 30,
                       group=group)
    saver.join()
    assert found is True
    assert looks.count == 3, "one look before sleeping, one per batch of the group"


def test_waiting_by_name(store, results, postgres):
    result = results.make()
    later(LATER / 2, lambda: store.save(result))
    assert store.wait(lambda: store.get_by_name(result.name), time.monotonic() + 30,
                      name=result.name) == result


def test_a_rolled_back_save_announces_nothing(store, results, postgres, monkeypatch):
    result = results.make()
    looks = ReadCounter(store, monkeypatch)

    def save_then_roll_back():
        with pytest.raises(ZeroDivisionError), transaction.atomic(using=postgres):
            store.save(result)
            1 / 0  # noqa: B018

    later(LATER / 2, save_then_roll_back)
    assert store.wait(lambda: store.get(result.id), time.monotonic() + LATER * 1.5,
                      task_id=result.id) is None
    assert looks.count == 1, "NOTIFY is sent at commit: a rollback wakes nobody"


def test_the_save_announces_what_it_wrote_in_payloads_under_8000_bytes(store, results,
                                                                       postgres):
    group = results.group()
    listener = Listener.for_database(postgres, waiting.CHANNEL, "qhive-test")
    try:
        batch = [results.make(group=group) for _ in range(300)]
        store.save_many(batch)
        payloads = [n.payload for n in listener.conn.notifies(timeout=2)]
    finally:
        listener.close()
    assert len(payloads) > 1 and all(len(p.encode()) < 8000 for p in payloads)
    announced = [key for payload in payloads for key in json.loads(payload)]
    assert set(announced) == ({f"result:{r.id}" for r in batch}
                              | {f"name:{r.name}" for r in batch} | {f"group:{group}"})


def test_a_waiter_unlistens_and_keeps_its_connection_for_the_next(store, results, postgres):
    for _ in range(3):
        result = results.make()
        later(0.2, lambda r=result: store.save(r))
        assert store.wait(lambda r=result: store.get(r.id), time.monotonic() + 30,
                          task_id=result.id) == result
        (listener,) = store._listeners[postgres]._idle
        rows = listener.conn.execute("SELECT pg_listening_channels()").fetchall()
        assert rows == [], "nobody waits: nothing to queue notifications for"


def waiting_in_thread(store, result, database, monkeypatch, before_another=None):
    """A waiter for ``result`` on a thread, the LISTEN connections it took (once it
    sleeps on the first) and what it returns; ``before_another()`` runs before it
    takes a second connection."""
    listeners = store._listeners_of(database)
    taken = []
    listening = threading.Event()
    take = listeners.take

    def recording():
        if taken and before_another is not None:
            before_another()
        taken.append(take())
        listening.set()
        return taken[-1]

    monkeypatch.setattr(listeners, "take", recording)
    waiter, answers = in_thread(lambda: store.wait(lambda: store.get(result.id),
                                                   time.monotonic() + 30, task_id=result.id))
    assert listening.wait(10)
    time.sleep(0.2)  # the waiter sleeps on its connection
    return waiter, answers, taken


def terminate(database, listener) -> None:
    with connections[database].cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [listener.conn.info.backend_pid])


def test_a_lost_listen_connection_is_replaced_and_the_result_still_found(
        store, results, postgres, monkeypatch, caplog):
    result = results.make()
    looks = ReadCounter(store, monkeypatch)
    waiter, answers, taken = waiting_in_thread(store, result, postgres, monkeypatch)
    terminate(postgres, taken[0])
    time.sleep(0.5)  # the waiter notices and listens on a new connection
    store.save(result)
    waiter.join(30)
    assert answers == [result]
    assert len(taken) == 2 and looks.count == 3, "a new connection, and a look once listening"
    assert "LISTEN connection of a waiter broke" in caplog.text


def test_a_result_saved_while_the_waiter_did_not_listen_is_found(store, results, postgres,
                                                                 monkeypatch):
    result = results.make()

    def save_now():  # the save lands while nobody listens: only a look finds it
        later(0, lambda: store.save(result)).join()

    waiter, answers, taken = waiting_in_thread(store, result, postgres, monkeypatch,
                                               before_another=save_now)
    terminate(postgres, taken[0])
    waiter.join(30)
    assert answers == [result]


def test_while_it_cannot_listen_it_polls_and_does_not_retry_at_once(store, results, postgres,
                                                                    monkeypatch, caplog):
    result = results.make()
    opened = []

    def unreachable(alias, channel, application_name):
        opened.append(alias)
        params = {**Listener.connection_params(alias, application_name), "port": 1}
        return Listener(params, channel)

    monkeypatch.setattr(Listener, "for_database", staticmethod(unreachable))
    looks = ReadCounter(store, monkeypatch)
    saver = later(LATER, lambda: store.save(result))
    assert store.wait(lambda: store.get(result.id), time.monotonic() + 30,
                      task_id=result.id) == result
    saver.join()
    assert looks.count > 3, "it polled"
    assert "cannot LISTEN" in caplog.text
    missing = results.make().id
    assert store.wait(lambda: store.get(missing), time.monotonic() + 0.1,
                      task_id=missing) is None
    assert opened == [postgres], "no new attempt within retry_interval"


# --------------------------------------------------------------------------- SQLite


def test_on_sqlite_a_waiter_sleeps_until_a_save_rings(store, results, sqlite, monkeypatch):
    result, unrelated = results.make(), results.make()
    looks = ReadCounter(store, monkeypatch)
    later(LATER / 2, lambda: store.save(unrelated))
    saver = later(LATER, lambda: store.save(result))
    found = store.wait(lambda: store.get(result.id), time.monotonic() + 30, task_id=result.id)
    saver.join()
    assert found == result
    assert looks.count == 3, "one look once asleep, one per save (the doorbell says not which)"
    assert os.listdir(doorbell_of(connections[sqlite], waiting.BELL).directory) == [], "it left"


def test_on_sqlite_a_save_rings_at_commit_and_a_rollback_not(store, results, sqlite,
                                                             monkeypatch):
    kept, dropped = results.make(), results.make()
    looks = ReadCounter(store, monkeypatch)

    def save_twice():
        with pytest.raises(ZeroDivisionError), transaction.atomic(using=sqlite):
            store.save(dropped)
            1 / 0  # noqa: B018
        with transaction.atomic(using=sqlite):
            store.save(kept)
            time.sleep(LATER / 2)  # not rung yet: a look now would not find it

    later(LATER / 2, save_twice)
    assert store.wait(lambda: store.get(kept.id), time.monotonic() + 30,
                      task_id=kept.id) == kept
    assert looks.count == 2, "one look once asleep, one at the commit; none for the rollback"


# --------------------------------------------------------------------------- other databases


def test_other_databases_poll_and_find_the_result(store, results, polling, monkeypatch):
    result = results.make()
    looks = ReadCounter(store, monkeypatch)
    saver = later(LATER, lambda: store.save(result))
    assert store.wait(lambda: store.get(result.id), time.monotonic() + 30,
                      task_id=result.id) == result
    saver.join()
    assert looks.count > 3, "without NOTIFY the default polls"
    assert store._listeners == {}
