"""Real ``manage.py qcluster`` processes on the IronMQ broker — the real ``iron-mq``
client against the IronMQ emulator running as a process of its own — with results in
the ORM store: a 2,000-task drain, ``kill -9`` of the whole cluster mid-load, a start
with the service down, and a start with a wrong token.

The emulator grants reservations from 1 s (``min_reservation_timeout`` 1; the
service's minimum is 30 s), so that the tasks of a killed cluster come back after a
``retry`` of 3 s instead of half a minute.
"""

from __future__ import annotations

import io
import re
import signal

from qhive_testkit.ironmq_emulator import EmulatorProcess
from qhive_testkit.outcomes import (
    assert_one_success_each,
    enqueue_many,
    get_broker,
    report,
    rows_of,
    successes,
    wait_for_sums,
)
from qhive_testkit.qcluster import QCluster, wait_until
from qhive_testkit.services import free_port

T = "qhive_testkit.tasks"


def test_drains_2000_tasks_with_one_correct_result_each(cluster_settings, qcluster,
                                                        ironmq_emulator_process):
    from django.core.management import call_command

    q = cluster_settings(iron_mq=ironmq_emulator_process.options(min_reservation_timeout=1))
    cluster = qcluster(q)
    assert "broker ironmq" in cluster.log()
    wait_for_sums(q, enqueue_many(f"{T}.add", [(n, 2000) for n in range(2000)]))

    # The broker keeps no statistics: qinfo finds the cluster's in the result store.
    def qinfo_showing_the_cluster() -> str | None:
        out = io.StringIO()
        call_command("qinfo", stdout=out)
        return out.getvalue() if re.search(r"Clusters\s+1\s", out.getvalue()) else None

    output = wait_until(qinfo_showing_the_cluster, within=60, what="qinfo showing the cluster")
    broker = get_broker()
    assert output.splitlines()[0].endswith(f"on {broker.info()} --"), output
    out = io.StringIO()
    call_command("qmonitor", "--run-once", stdout=out)
    row = [line.split() for line in out.getvalue().splitlines() if q["name"] in line]
    assert row and row[0][3] in ("Idle", "Working") and row[0][4] == "2", out.getvalue()
    assert broker.info() in out.getvalue()

    assert cluster.stop() == 0
    assert "stopped (2000 processed, 0 failed)" in cluster.log()
    assert broker.queue_size() == 0 and broker.lock_size() == 0


def test_kill_9_of_the_cluster_mid_load_loses_nothing(cluster_settings, qcluster,
                                                      ironmq_emulator_process, tmp_path):
    path = tmp_path / "runs.jsonl"
    q = cluster_settings(iron_mq=ironmq_emulator_process.options(min_reservation_timeout=1),
                         retry=3, workers=2)
    enqueued = 1500
    ids = enqueue_many(f"{T}.record", [(str(path), n) for n in range(enqueued)])
    cluster = qcluster(q)  # after the enqueue: it is killed mid-load on any machine
    wait_until(lambda: rows_of(q) >= 200, within=120, what="200 results")
    assert cluster.signal_group(signal.SIGKILL) == -signal.SIGKILL  # sentinel and workers
    done_before = len(successes(q))
    broker = get_broker()
    print(f"\nkilled the cluster (kill -9 of its process group) with {done_before} of "
          f"{enqueued} results saved, {broker.queue_size()} waiting")
    assert done_before < enqueued, "the cluster was killed mid-load"

    second = qcluster(q)
    wait_until(lambda: len(successes(q)) >= enqueued, within=300, what="every result")
    lost, _ = report("kill -9 mid-load, then a restart", path, enqueued)
    assert lost == 0
    assert_one_success_each(q, ids)
    assert second.stop() == 0
    assert broker.queue_size() == 0 and broker.lock_size() == 0


def test_started_while_the_service_is_down_it_waits_then_works(cluster_settings, qcluster,
                                                               tmp_path):
    from qhive_django.tasks import async_task, result

    server = EmulatorProcess(tmp_path, port=free_port(), min_timeout=1)
    q = cluster_settings(iron_mq=server.options(min_reservation_timeout=1))
    cluster = qcluster(q)  # "running": the unreachable service is an outage, not a crash
    log = cluster.log()
    assert "the broker cannot be reached yet (IronMQ broker: ping failed: cannot reach " \
           f"IronMQ at http://127.0.0.1:{server.port} (" in log, log
    cluster.wait_for_log("taking tasks: broker error: IronMQ broker: dequeue failed: "
                         "cannot reach")
    server.start()
    try:
        task = async_task(f"{T}.add", 20, 22)
        assert result(task, wait=60_000) == 42
        cluster.wait_for_log("broker reachable again")
        assert cluster.stop() == 0
    finally:
        server.stop()


def test_a_wrong_token_stops_the_start_in_one_line(cluster_settings, django_project, tmp_path,
                                                   ironmq_emulator_process):
    q = cluster_settings(iron_mq=ironmq_emulator_process.options(token="not-the-token"))
    cluster = QCluster(django_project, q, tmp_path / "qcluster.log")
    assert cluster.wait() == 1
    log = cluster.log()
    assert "Traceback" not in log, log
    [line] = [x for x in log.splitlines() if "refused the token" in x]
    assert "IronMQ broker: ping failed: IronMQ at http://127.0.0.1:" in line
    assert "refused the token (401 Unauthorized); check Q_CLUSTER['iron_mq']['token']" in line
    assert "not-the-token" not in log
