"""``make demo``: qhive end to end on a small Django project (SQLite, the ORM broker).

Results go to the ORM result store, or with ``QHIVE_DEMO_RESULT_STORE=redis`` to the Redis
result store (``QHIVE_DEMO_REDIS``, default ``redis://127.0.0.1:6379/0``) and the project
does not install ``qhive_store_orm``: the demo reads results through the task API only.

Migrates a fresh database, creates a schedule (every second, three runs), starts a real
``manage.py qcluster``, enqueues a few hundred tasks with ``async_task``, waits for their
results and the schedule's, prints what the database holds, stops
the cluster with SIGTERM and checks that it stopped cleanly. Exits 1, saying why, if
anything went wrong.
"""

from __future__ import annotations

import contextlib
import os
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
N_BEATS = 3  # runs of the "heartbeat" schedule, one per second
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


def wait_until_up(cluster: ClusterProcess, pipeline):
    from qhive.cluster.stat import IDLE, WORKING, Stat

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        cluster.check_alive("while starting")
        up = [s for s in Stat.store_for(pipeline).get_all() if s.status in (IDLE, WORKING)]
        if up:
            return up[0]
        time.sleep(0.1)
    raise DemoFailed(f"the cluster was not up after {START_TIMEOUT} s (log: {cluster.log_path})")


def saved(ids) -> dict:
    """id -> the saved result (a :class:`qhive.contracts.TaskResult`), in one read."""
    from qhive_django.conf import get_pipeline

    return get_pipeline().result_store.get_many(ids)


def wait_for_results(cluster: ClusterProcess, ids) -> None:
    deadline = time.monotonic() + RESULTS_TIMEOUT
    while (done := len(saved(ids))) < len(ids):
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


def enqueue() -> dict:
    """Queue the demo's tasks; return task id -> the result it must have (or MUST_FAIL)."""
    from demo_project import tasks
    from qhive_django.tasks import async_task

    expected = {}
    for n in range(1, N_COLLATZ + 1):
        expected[async_task(tasks.collatz_steps, n, group="collatz")] = tasks.collatz_steps(n)
    for n in range(1, N_SLOW + 1):
        expected[async_task(tasks.slow_square, n, group="squares", hook=tasks.report)] = n * n
    for n in range(1, N_FAILING + 1):
        expected[async_task(tasks.always_fails, n, group="failing", hook=tasks.report)] = MUST_FAIL
    expected[async_task(tasks.fibonacci, 90, task_name="fibonacci-90")] = tasks.fibonacci(90)
    return expected


def show_results(expected: dict) -> list:
    """Check every result against ``expected``, print a sample; return the rows."""
    from qhive_django.tasks import count_group, fetch, result

    rows = list(saved(list(expected)).values())
    wrong = [row for row in rows if not is_right(row, expected[row.id])]
    if wrong:
        raise DemoFailed(f"{len(wrong)} wrong results, e.g. {call(wrong[0])} = {wrong[0].result!r}")
    group = {name: sorted((row for row in rows if row.group == name), key=lambda row: row.args)
             for name in ("collatz", "squares", "failing")}
    by_id = fetch(next(row.id for row in group["collatz"] if row.args == (27,)))
    longest = max(group["collatz"], key=lambda row: row.result)
    print("\nresults, read back from the result store:")
    print(f"  {call(by_id)} = {by_id.result}   (fetch by id: task {by_id.name!r}, run by "
          f"cluster {by_id.cluster!r}, {by_id.time_taken() * 1000:.0f} ms after its enqueue)")
    print(f"  group 'collatz': {count_group('collatz')} results; longest: "
          f"{call(longest)} = {longest.result}")
    for row in group["squares"][:3]:
        print(f"  {call(row)} = {row.result}   (group 'squares', {row.time_taken():.2f} s)")
    print(f"  fibonacci(90) = {result('fibonacci-90')}   (result by task_name)")
    failures = sum(not row.success for row in rows)
    print(f"\nfailures ({failures}, on purpose; the cluster logged them as ERROR above):")
    for row in group["failing"]:
        print(f"  {call(row)}: {str(row.result).strip().splitlines()[-1]}")
    return rows


def create_schedule() -> None:
    """A schedule the cluster's scheduler runs once per second, ``N_BEATS`` times."""
    import datetime as dt

    from demo_project import tasks
    from qhive_django.models import Schedule
    from qhive_django.tasks import schedule

    schedule(tasks.heartbeat, name="heartbeat", schedule_type=Schedule.SECONDS, seconds=1,
             repeats=N_BEATS, intended_date_kwarg="slot",
             next_run=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))


def show_schedule(cluster: ClusterProcess) -> None:
    """Wait for the schedule's runs; print when each was due and when it ran."""
    import datetime as dt

    from qhive_django.models import Schedule
    from qhive_django.tasks import fetch_group

    def runs_so_far() -> list:
        return sorted(fetch_group("heartbeat") or [], key=lambda run: run.stopped)

    deadline = time.monotonic() + RESULTS_TIMEOUT
    while len(runs := runs_so_far()) < N_BEATS:
        cluster.check_alive(f"with {len(runs)} of {N_BEATS} scheduled runs done")
        if time.monotonic() > deadline:
            raise DemoFailed(f"the schedule ran {len(runs)} of {N_BEATS} times")
        time.sleep(0.1)
    if len(runs) != N_BEATS or not all(run.success for run in runs):
        raise DemoFailed(f"the schedule should have run {N_BEATS} times, successfully: {runs}")
    beat = Schedule.objects.get(name="heartbeat")
    print(f"\nschedule 'heartbeat' (every second, repeats={N_BEATS}): ran {len(runs)} times, "
          f"now repeats={beat.repeats} (done)")
    for run in runs:
        due = dt.datetime.fromisoformat(run.result)
        print(f"  slot {due:%H:%M:%S}: finished {(run.stopped - due).total_seconds() * 1000:.0f} "
              f"ms after it was due")


def stop(cluster: ClusterProcess) -> list[str]:
    """Stop the cluster with SIGTERM, check it stopped cleanly; return the hook lines."""
    from qhive_django.tasks import queue_size

    print("\nstopping the cluster (SIGTERM) ...")
    code = cluster.stop()
    if code != 0 or not cluster.grep(" stopped ("):
        raise DemoFailed(f"the cluster exited with code {code}"
                         + ("" if cluster.grep(" stopped (") else " without its 'stopped' line"))
    print(f"cluster exited with code 0; {len(cluster.grep(' Processed ')):,} 'Processed' lines "
          f"in {os.path.relpath(cluster.log_path)}")
    if left := queue_size():
        raise DemoFailed(f"{left} tasks are still in the queue")
    hooks = cluster.grep("hook got ")
    print(f"\nhook calls seen: {len(hooks)} (hook= on {N_SLOW + N_FAILING} tasks), e.g.")
    for outcome in (" returned ", " failed: "):
        print(*[f"  {line}" for line in hooks if outcome in line][:2], sep="\n")
    if len(hooks) != N_SLOW + N_FAILING:
        raise DemoFailed(f"expected {N_SLOW + N_FAILING} hook calls, saw {len(hooks)}")
    return hooks


def demo(cluster: ClusterProcess, began: float) -> str:
    from qhive_django.conf import get_pipeline

    stat = wait_until_up(cluster, get_pipeline())
    print(f"cluster up ({stat.status}) at {time.monotonic() - began:.1f} s: pid {stat.pid}, "
          f"workers {stat.workers}, queue {stat.name!r}\n")
    t0 = time.monotonic()
    expected = enqueue()
    enqueued = time.monotonic() - t0
    print(f"enqueued {len(expected)} tasks in {enqueued:.2f} s ({len(expected) / enqueued:,.0f} "
          f"tasks/s); waiting for the results ...")
    wait_for_results(cluster, list(expected))
    drained = time.monotonic() - t0
    rows = show_results(expected)
    show_schedule(cluster)
    span = max(row.stopped for row in rows) - min(row.started for row in rows)
    print(f"\nthroughput: {len(rows)} tasks enqueued, run and saved in {drained:.2f} s "
          f"({len(rows) / drained:,.0f} tasks/s) by 2 workers; in the result store, first "
          f"enqueue to last result: {span.total_seconds():.2f} s")
    hooks = stop(cluster)
    failed = sum(not row.success for row in rows)
    return (f"demo OK: {len(rows)} tasks run by a real cluster, {len(rows) - failed} results "
            f"checked, {failed} failures as intended, {len(hooks)} hook calls, "
            f"{N_BEATS} scheduled runs, "
            f"{len(rows) / drained:,.0f} tasks/s, {time.monotonic() - began:.1f} s in all")


def main() -> int:
    began = time.monotonic()
    sys.stdout.reconfigure(line_buffering=True)  # live progress through a pipe too
    DATA.mkdir(parents=True, exist_ok=True)
    for name in ("db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm", "qcluster.log"):
        (DATA / name).unlink(missing_ok=True)  # every run starts from an empty database
    os.environ.update(DJANGO_SETTINGS_MODULE="demo_project.settings", QHIVE_DEMO_DATA=str(DATA))
    sys.path.insert(0, str(HERE))
    os.environ.pop("Q_CLUSTER_NAME", None)  # the root cluster of the demo's settings
    print(f"qhive demo: a Django project on SQLite ({DATA / 'db.sqlite3'})")
    if subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"],
                      cwd=HERE).returncode:
        print("demo FAILED: manage.py migrate failed (above)", file=sys.stderr)
        return 1
    import django

    django.setup()
    create_schedule()
    cluster = ClusterProcess()
    try:
        print(demo(cluster, began))
        return 0
    except DemoFailed as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if cluster.proc.poll() is None:
            with contextlib.suppress(DemoFailed):
                cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
