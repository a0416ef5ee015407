"""SQLite's doorbell on its own: sleepers woken across processes, rings kept until
read, sleepers that died cleaned away, in-memory databases without one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from qhive_broker_orm.doorbell import Doorbell, sqlite_doorbell

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")


@pytest.fixture
def bell(tmp_path):
    return Doorbell(str(tmp_path / "db.sqlite3.qhive" / "queue-x"))


def test_a_ring_wakes_a_sleeper_and_is_read(bell):
    with bell.sleeper() as sleeper:
        assert sleeper.wait(0) is False
        bell.ring()
        bell.ring()
        assert sleeper.wait(5) is True, "a ring before the wait is kept"
        assert sleeper.wait(0) is False, "both rings were read at once"


def test_a_ring_from_another_process_wakes_the_sleeper(bell):
    code = textwrap.dedent(f"""
        import time
        from qhive_broker_orm.doorbell import Doorbell
        time.sleep(0.3)
        Doorbell({bell.directory!r}).ring()
    """)
    with bell.sleeper() as sleeper:
        ringer = subprocess.Popen([sys.executable, "-c", code])
        started = time.monotonic()
        assert sleeper.wait(30) is True
        assert time.monotonic() - started < 20, "woken by the ring, not by the timeout"
        assert ringer.wait(30) == 0


def test_every_sleeper_is_woken(bell):
    with bell.sleeper() as one, bell.sleeper() as two:
        bell.ring()
        assert one.wait(5) and two.wait(5)


def test_a_closed_sleeper_leaves_nothing_and_a_ring_with_nobody_is_harmless(bell, tmp_path):
    Doorbell(str(tmp_path / "never-used")).ring()
    with bell.sleeper():
        assert len(os.listdir(bell.directory)) == 1
    assert os.listdir(bell.directory) == []
    bell.ring()


def test_the_fifo_of_a_sleeper_that_died_is_removed_by_the_next_ring(bell):
    code = textwrap.dedent(f"""
        import sys, time
        from qhive_broker_orm.doorbell import Doorbell
        sleeper = Doorbell({bell.directory!r}).sleeper()
        print("asleep", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "asleep"
    assert len(os.listdir(bell.directory)) == 1
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    bell.ring()
    assert os.listdir(bell.directory) == []


@pytest.mark.parametrize("name", ["", ":memory:", "file:memorydb_default?mode=memory&cache=shared"])
def test_in_memory_databases_have_no_doorbell(name):
    assert sqlite_doorbell(name, "queue-x") is None


def test_a_file_database_has_its_doorbell_beside_it(tmp_path):
    bell = sqlite_doorbell(str(tmp_path / "db.sqlite3"), "results")
    assert bell.directory == str(tmp_path / "db.sqlite3.qhive" / "results")


def test_a_queue_wakes_one_sleeper_per_message_and_skips_those_already_rung(bell):
    with bell.sleeper() as one, bell.sleeper() as two, bell.sleeper() as three:
        sleepers = (one, two, three)
        bell.ring(1)
        bell.ring(1)  # another one: the first has not read its ring yet
        assert [s.wait(0) for s in sleepers].count(True) == 2
        bell.ring(2)
        bell.ring(2)  # the third, and nobody more: all were rung
        bell.ring(2)
        assert all(s.wait(0) for s in sleepers), "each rung once, its rings read at once"
        bell.ring(0)
        assert not any(s.wait(0) for s in sleepers)
        bell.ring()
        assert all(s.wait(0) for s in sleepers)
