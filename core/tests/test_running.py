"""qhive.progress outside and inside a worker; qhive.running reading running entries."""

import datetime as dt

import pytest
from qhive import progress as running
from qhive import running as states
from qhive.cluster.stat import Stat


@pytest.mark.parametrize("fraction", [-0.1, 1.5, "half", None, True, float("nan")])
def test_progress_takes_a_fraction_from_0_to_1(fraction):
    with pytest.raises(ValueError, match="progress\\(\\) takes a fraction from 0 to 1"):
        running.progress(fraction)


def test_progress_outside_a_worker_does_nothing():
    assert running.progress(0.5, "nobody watches") is False


def test_progress_goes_to_the_worker_sink_with_its_note_cut(monkeypatch):
    sent = []
    monkeypatch.setattr(running, "_sink", None)
    running.report_to(lambda fraction, note: sent.append((fraction, note)))
    try:
        assert running.progress(1, "x" * 500) is True
        assert running.progress(0.25) is True
    finally:
        running.report_to(None)
    assert sent == [(1.0, "x" * running.NOTE_LIMIT), (0.25, None)]


def test_running_entries_become_task_states_and_bad_ones_are_skipped():
    now = dt.datetime.now(dt.UTC).timestamp()
    stat = Stat("c" * 32, "default", "host-a", 10, running=[
        {"id": "b", "name": "later", "func": "m.f", "worker": 11, "started": now,
         "attempt": 2, "progress": 0.4, "note": "step 2"},
        {"id": "a", "name": "earlier", "func": "m.g", "worker": 12, "started": now - 60},
        {"name": "no id: from another version"},
        {"id": "c", "started": "not a number"},
    ])
    tasks = states.running_tasks([Stat.loads(stat.dumps())])
    assert [t.id for t in tasks] == ["a", "b"]
    later = tasks[1]
    assert (later.status, later.cluster, later.host, later.worker, later.attempt) == (
        "running", "default", "host-a", 11, 2)
    assert later.progress_text == "40% step 2" and tasks[0].progress_text == ""
    assert later.started == dt.datetime.fromtimestamp(now, dt.UTC)
