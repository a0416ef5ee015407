"""Django Q2's ``post_execute_in_worker`` signal in a real ``manage.py qcluster``: a
receiver connected in a worker process receives it there, for successes and failures."""

from __future__ import annotations

import json
import os
import textwrap

from qhive_testkit.qcluster import wait_until

#: A module the cluster imports from the test's folder: its first task connects a
#: receiver in the worker that runs it, which then records every task it sees.
PROBE = '''
import json
import os

from qhive_django.signals import post_execute_in_worker

PATH = {path!r}


def record(sender, func, task, **kwargs):
    line = {{"sender": sender, "pid": os.getpid(), "func": getattr(func, "__name__", None),
             "id": task["id"], "result": repr(task["result"]), "success": task["success"]}}
    with open(PATH, "a") as out:
        out.write(json.dumps(line) + "\\n")


def connect():
    post_execute_in_worker.connect(record, sender="django_q", dispatch_uid="probe")
    return os.getpid()
'''


def test_a_receiver_in_the_worker_gets_post_execute_in_worker(cluster_settings, qcluster,
                                                              tmp_path, monkeypatch):
    from qhive_django.tasks import async_task, result

    log = tmp_path / "signals.jsonl"
    (tmp_path / "qhive_signal_probe.py").write_text(textwrap.dedent(PROBE.format(path=str(log))))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    q = cluster_settings(workers=1)
    cluster = qcluster(q)
    connected = async_task("qhive_signal_probe.connect")
    worker = result(connected, wait=60_000)
    assert worker and worker != cluster.pid, "ran in a worker"
    failed = async_task("qhive_testkit.tasks.boom", "on purpose")

    def lines():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    wait_until(lambda: len(lines()) >= 2, within=60, what="two post_execute_in_worker sends")
    assert cluster.stop() == 0
    first, second = lines()
    assert first == {"sender": "qhive", "pid": worker, "func": "connect", "id": connected,
                     "result": repr(worker), "success": True}
    assert (second["pid"], second["func"], second["id"], second["success"]) == \
        (worker, "boom", failed, False)
    assert "ValueError: on purpose" in second["result"]
