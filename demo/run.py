"""``make demo``: qhive end to end on a small Django project (SQLite, the ORM broker).

Migrates a fresh database, starts a real ``manage.py qcluster``, enqueues a few hundred
tasks with ``async_task``, waits for their results, prints what the database holds, stops
the cluster with SIGTERM and checks that it stopped cleanly. Exits 1, saying why, if
anything went wrong.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("QHIVE_DEMO_DATA") or HERE / ".data").resolve()
START_TIMEOUT, RESULTS_TIMEOUT, STOP_TIMEOUT = 30, 120, 30  # seconds
N_COLLATZ, N_SLOW, N_FAILING = 300, 40, 5  # and one task named "fibonacci-90"
MUST_FAIL = object()


class DemoFailed(Exception):
    """Something went wrong; the message says what."""


class ClusterProcess:
    """``manage.py qcluster`` as a subprocess. Its output goes to ``qcluster.log`` and,
    except the one-line-per-task lines, to the screen."""

    PER_TASK = (" Processed '", "hook got ")

    def __init__(self) -> None:
        self.log_path = DATA / "qcluster.log"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=HERE, text=True, bufsize=1,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with self.log_path.open("w") as log:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                log.write(line)
                if not any(marker in line for marker in self.PER_TASK):
                    print(f"  qcluster | {line}", end="", flush=True)

    def grep(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    def check_alive(self, doing: str) -> None:
        if self.proc.poll() is not None:
            raise DemoFailed(f"the cluster exited with code {self.proc.returncode} {doing} "
                             f"(its log: {self.log_path})")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise DemoFailed(f"the cluster did not stop within {STOP_TIMEOUT} s of SIGTERM; "
                             "killed it") from None
        self.reader.join(5)
        return self.proc.returncode


def wait_until_up(cluster: ClusterProcess, broker):
    from qhive.cluster.stat import IDLE, WORKING, Stat

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        cluster.check_alive("while starting")
        up = [s for s in Stat.get_all(broker, "demo") if s.status in (IDLE, WORKING)]
        if up:
            return up[0]
        time.sleep(0.1)
    raise DemoFailed(f"the cluster was not up after {START_TIMEOUT} s (log: {cluster.log_path})")


def wait_for_results(cluster: ClusterProcess, ids) -> None:
    from qhive_django.models import Task

    deadline = time.monotonic() + RESULTS_TIMEOUT
    while (done := Task.objects.filter(id__in=ids).count()) < len(ids):
        cluster.check_alive(f"with {done} of {len(ids)} results saved")
        if time.monotonic() > deadline:
            raise DemoFailed(f"only {done} of {len(ids)} results after {RESULTS_TIMEOUT} s")
        time.sleep(0.05)


def is_right(row, expected) -> bool:
    if expected is MUST_FAIL:
        return not row.success
    return row.success and row.result == expected


def call(task) -> str:
    return f"{task.func.rsplit('.', 1)[-1]}({', '.join(map(repr, task.args))})"


def demo(cluster: ClusterProcess, began: float) -> str:
    from demo_project import tasks
    from qhive_django.conf import get_pipeline
    from qhive_django.models import Failure, Task
    from qhive_django.tasks import async_task, fetch, queue_size, result

    stat = wait_until_up(cluster, get_pipeline().broker)
    print(f"cluster {stat.status.lower()} after {time.monotonic() - began:.1f} s: pid {stat.pid}, "
          f"workers {stat.workers}, queue {stat.name!r}\n")

    t0 = time.monotonic()
    expected = {}  # task id -> the value its result must have, or MUST_FAIL
    for n in range(1, N_COLLATZ + 1):
        expected[async_task(tasks.collatz_steps, n, group="collatz")] = tasks.collatz_steps(n)
    for n in range(1, N_SLOW + 1):
        expected[async_task(tasks.slow_square, n, group="squares", hook=tasks.report)] = n * n
    for n in range(1, N_FAILING + 1):
        expected[async_task(tasks.always_fails, n, group="failing", hook=tasks.report)] = MUST_FAIL
    expected[async_task(tasks.fibonacci, 90, task_name="fibonacci-90")] = tasks.fibonacci(90)
    enqueue_s = time.monotonic() - t0
    print(f"enqueued {len(expected)} tasks in {enqueue_s:.2f} s "
          f"({len(expected) / enqueue_s:,.0f} tasks/s); waiting for the results ...")
    wait_for_results(cluster, list(expected))
    drain_s = time.monotonic() - t0

    rows = {row.id: row for row in Task.objects.filter(id__in=list(expected))}
    wrong = [row for row in rows.values() if not is_right(row, expected[row.id])]
    if wrong:
        raise DemoFailed(f"{len(wrong)} wrong results, e.g. {call(wrong[0])} = {wrong[0].result!r}")
    collatz = [row for row in rows.values() if row.group == "collatz"]
    longest = max(collatz, key=lambda row: row.result)
    by_id = fetch(next(iter(expected)), wait=1000)
    print("\nresults, read back from the database:")
    print(f"  {call(by_id)} = {by_id.result}   (fetch by id: task {by_id.name!r}, run by "
          f"cluster {by_id.cluster!r} in {by_id.time_taken() * 1000:.0f} ms from enqueue)")
    print(f"  group 'collatz': {Task.get_group_count('collatz')} results; longest: "
          f"{call(longest)} = {longest.result}")
    for row in sorted((r for r in rows.values() if r.group == "squares"), key=str)[:3]:
        print(f"  {call(row)} = {row.result}   (group 'squares', took {row.time_taken():.2f} s)")
    print(f"  fibonacci(90) = {result('fibonacci-90', wait=1000)}   (result by task_name)")
    failures = Failure.objects.filter(id__in=list(expected)).order_by("name")
    print(f"\nfailures ({failures.count()}, as intended):")
    for row in failures:
        print(f"  {call(row)}: {str(row.result).strip().splitlines()[-1]}")
    span = max(r.stopped for r in rows.values()) - min(r.started for r in rows.values())
    print(f"\nthroughput: {len(rows)} tasks enqueued, run and saved in {drain_s:.2f} s "
          f"({len(rows) / drain_s:,.0f} tasks/s; first enqueue to last result in the database: "
          f"{span.total_seconds():.2f} s) by 2 workers\n\nstopping the cluster (SIGTERM) ...")

    code = cluster.stop()
    stopped = cluster.grep(" stopped (")
    if code != 0 or not stopped:
        raise DemoFailed(f"the cluster exited with code {code}"
                         + ("" if stopped else " without its 'stopped' line"))
    hooks = cluster.grep("hook got ")
    print(f"cluster exited with code 0; {len(cluster.grep(' Processed ')):,} 'Processed' lines "
          f"in {os.path.relpath(cluster.log_path)}")
    print(f"\nhook calls seen: {len(hooks)} (hook= on {N_SLOW + N_FAILING} tasks), e.g.")
    for line in sorted(hooks, key=lambda line: "returned" in line)[:2] + hooks[-1:]:
        print(f"  {line}")
    if len(hooks) != N_SLOW + N_FAILING:
        raise DemoFailed(f"expected {N_SLOW + N_FAILING} hook calls, saw {len(hooks)}")
    left = queue_size()
    if left:
        raise DemoFailed(f"{left} tasks are still in the queue")
    return (f"demo OK: {len(rows)} tasks run by a real cluster, {len(rows) - failures.count()} "
            f"results checked, {failures.count()} failures as intended, {len(hooks)} hook calls, "
            f"{len(rows) / drain_s:,.0f} tasks/s, {time.monotonic() - began:.1f} s in all")


def main() -> int:
    began = time.monotonic()
    shutil.rmtree(DATA, ignore_errors=True)  # every run starts from an empty database
    DATA.mkdir(parents=True)
    os.environ.update(DJANGO_SETTINGS_MODULE="demo_project.settings", QHIVE_DEMO_DATA=str(DATA))
    sys.path.insert(0, str(HERE))
    print(f"qhive demo: a Django project on SQLite ({DATA / 'db.sqlite3'})")
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=HERE,
                   check=True)
    import django

    django.setup()
    cluster = ClusterProcess()
    try:
        print(demo(cluster, began))
        return 0
    except DemoFailed as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if cluster.proc.poll() is None:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
