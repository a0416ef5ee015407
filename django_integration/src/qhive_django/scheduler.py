"""The scheduler: turns due ``Schedule`` rows into tasks, once per slot.

Every cluster with ``scheduler`` on runs one, on a thread of its sentinel
(started and stopped by this app's ``qhive_cluster_started`` /
``qhive_cluster_stopping`` hooks). It handles the schedules meant for its
cluster: those naming it in ``cluster``, and for the root cluster those naming
none.

**Once per slot, with any number of clusters.** A slot is claimed by a
compare-and-set ``UPDATE`` of the schedule row (``WHERE next_run = <the slot>
AND repeats = <as read>``) that opens the schedule's own transaction: the
database's row lock makes a second cluster wait for the first one's commit, after
which its ``UPDATE`` matches no row and it moves on. The task is enqueued inside
that transaction: with the ORM broker on the same database the task exists if
and only if the claim committed; with another broker a failed commit can repeat
the slot once, under the same task id (derived from the schedule and the slot),
so it still has one result.

**Failures stay alone.** Each schedule has its own transaction; one that cannot
be run (bad arguments, a broker error) is logged with the reason, left as it was,
and tried again after ``scheduler_interval`` — the others go on.

**On time.** After each pass the scheduler sleeps until the next schedule is due,
or ``scheduler_interval`` if that comes first: a schedule every 10 s runs every 10 s.
A schedule added, changed or deleted wakes it at once
(:func:`qhive_django.models.schedules_changed`): on PostgreSQL a ``NOTIFY`` reaches
its ``LISTEN`` connection; elsewhere (or when it cannot listen) it reads the
schedules' revision every :data:`CHANGE_CHECK_INTERVAL`. It notes the revision
(or empties its notifications) before each pass, so a change made during a pass
wakes it right after; a change only wakes it early, and the claim keeps each slot once.

**Missed slots** (the cluster was down): with ``catch_up`` (the default) each one
runs, oldest first, up to :data:`CATCH_UP_BATCH` per schedule per pass; without,
the schedule runs once and moves to its first future slot.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from django.db import close_old_connections, connections, router, transaction
from django.db.models import Min, Q, QuerySet
from django.utils import timezone
from qhive.config import Config
from qhive.task import derived_id, split_options
from qhive_broker_orm.listen import Listener

from qhive_django.conf import get_pipeline
from qhive_django.models import SCHEDULES_CHANNEL, Schedule, ScheduleRevision

logger = logging.getLogger("qhive.scheduler")

#: Missed slots of one schedule run per pass with ``catch_up``; the next pass goes on.
CATCH_UP_BATCH = 100
#: Seconds between two looks at the schedules' revision by a sleeping scheduler that
#: cannot LISTEN (SQLite, MariaDB), and the longest it takes to notice that it stops.
CHANGE_CHECK_INTERVAL = 1.0
#: After the LISTEN connection failed, read the revision this long before trying again.
LISTEN_RETRY_INTERVAL = 30.0


def schedules_of(config: Config) -> QuerySet:
    """The active schedules this cluster runs."""
    mine = Q(cluster=config.cluster_name)
    if config.cluster_name == config.name:  # the root cluster also runs the unrouted ones
        mine |= Q(cluster__isnull=True) | Q(cluster="")
    return Schedule.objects.filter(mine).exclude(repeats=0).filter(next_run__isnull=False)


def run_due(config: Config, now: dt.datetime | None = None,
            skip: frozenset[int] | set[int] = frozenset(),
            stopping: threading.Event | None = None) -> tuple[int, set[int]]:
    """One pass: run every due schedule of this cluster.

    :param skip: schedule ids to leave alone (they failed recently).
    :param stopping: set when the cluster stops: the pass ends after the current schedule.
    :return: the number of tasks created, and the ids of schedules that failed.
    """
    now = now or timezone.now()
    due = schedules_of(config).filter(next_run__lte=now).exclude(pk__in=skip).order_by("next_run")
    created, failed = 0, set()
    for schedule in due:
        if stopping is not None and stopping.is_set():
            break
        try:
            created += run_schedule(schedule, config, now)
        except Exception as exc:
            failed.add(schedule.pk)
            logger.error("schedule %s could not run: %s: %s; it is tried again in %ss",
                         schedule.pk, type(exc).__name__, exc, config.scheduler_interval,
                         exc_info=logger.isEnabledFor(logging.DEBUG))
    return created, failed


def run_schedule(schedule: Schedule, config: Config, now: dt.datetime) -> int:
    """Run the due slots of ``schedule`` (as read); return how many tasks were created."""
    runs, next_run, repeats = plan(schedule, now, config.catch_up)
    if not runs:
        return 0
    task_ids = [derived_id(f"schedule-{schedule.pk}", slot.isoformat()) for slot in runs]
    db = router.db_for_write(Schedule)
    with transaction.atomic(using=db):
        # The claim: it matches no row if another cluster ran this slot meanwhile (or
        # someone edited the schedule); the row lock holds others off until the commit.
        # Through the plain base manager: a claim is no news to the other schedulers.
        as_read = Schedule._base_manager.using(db).filter(
            pk=schedule.pk, next_run=schedule.next_run, repeats=schedule.repeats)
        if schedule.schedule_type == Schedule.ONCE and schedule.repeats < 0:
            claimed = as_read.delete()[0]
        else:
            claimed = as_read.update(next_run=next_run, repeats=repeats, task=task_ids[-1],
                                     anchor=schedule.anchor or schedule.next_run)
        if not claimed:
            return 0
        for slot, task_id in zip(runs, task_ids, strict=True):
            enqueue(schedule, slot, task_id, config)
    return len(runs)


def plan(schedule: Schedule, now: dt.datetime,
         catch_up: bool) -> tuple[list[dt.datetime], dt.datetime | None, int]:
    """The slots to run now, and the schedule's ``next_run`` and ``repeats`` after them."""
    zone = schedule.zone()
    repeats = schedule.repeats
    runs: list[dt.datetime] = []
    slot: dt.datetime | None = schedule.next_run
    while slot is not None and slot <= now and repeats and len(runs) < CATCH_UP_BATCH:
        runs.append(slot)
        repeats -= 1  # negative counts on down: -1, -2, ... (never reaches 0)
        slot = schedule.slot_after(slot, zone)
        if not catch_up:  # one run, then the first slot after now
            if slot is not None and slot <= now:
                slot = schedule.slot_after(now, zone)
            break
    if schedule.schedule_type == Schedule.ONCE:
        return runs, schedule.next_run, 0
    return runs, slot, repeats


def enqueue(schedule: Schedule, slot: dt.datetime, task_id: str, config: Config) -> None:
    """Send the task of one slot."""
    options, kwargs = split_options(schedule.kwargs or {})
    if schedule.intended_date_kwarg:
        kwargs[schedule.intended_date_kwarg] = slot.isoformat()
    if schedule.hook:
        options["hook"] = schedule.hook
    options.setdefault("group", schedule.name or str(schedule.pk))
    routed = options.pop("cluster", None)
    pipeline = get_pipeline(schedule.cluster or routed or config.cluster_name)
    pipeline.submit(schedule.func, tuple(schedule.args or ()), kwargs, options, task_id=task_id,
                    raise_errors=False)
    logger.info("created task %s from schedule [%s] for %s", task_id,
                schedule.name or schedule.pk, slot.isoformat())


class Scheduler(threading.Thread):
    """The scheduler thread of one cluster."""

    def __init__(self, config: Config) -> None:
        super().__init__(name="qhive-scheduler", daemon=True)
        self.config = config
        self.stopping = threading.Event()
        self._failed: dict[int, float] = {}  # schedule id -> when to try it again

    def run(self) -> None:
        changes = ScheduleChanges(router.db_for_write(Schedule))
        logger.info("scheduler running (looks every %ss, whenever a schedule is due, and "
                    "when schedules change)", self.config.scheduler_interval)
        try:
            while not self.stopping.is_set():
                changes.arm()
                changes.wait(self.run_once(), self.stopping)
        finally:
            changes.close()
            connections.close_all()  # this thread's; the cluster goes on without them

    def run_once(self) -> float:
        """One pass; return the seconds to sleep before the next."""
        interval = self.config.scheduler_interval
        clock = time.monotonic()
        self._failed = {pk: at for pk, at in self._failed.items() if at > clock}
        try:
            close_old_connections()
            _created, failed = run_due(self.config, skip=set(self._failed),
                                      stopping=self.stopping)
            self._failed.update(dict.fromkeys(failed, clock + interval))
            earliest = (schedules_of(self.config).exclude(pk__in=list(self._failed))
                        .aggregate(at=Min("next_run"))["at"])
        except Exception as exc:  # the database is away: try again later
            logger.error("scheduler: %s: %s; next look in %ss", type(exc).__name__, exc, interval)
            return interval
        if earliest is None:
            return interval
        return min(interval, max(0.0, (earliest - timezone.now()).total_seconds()))

    def stop(self, timeout: float = 10) -> None:
        self.stopping.set()
        self.join(timeout)


class ScheduleChanges:
    """Ends a scheduler's sleep when schedules change on database ``alias``: ``LISTEN``
    on PostgreSQL (a :class:`qhive_broker_orm.listen.Listener`, as the ORM broker), else the
    :class:`~qhive_django.models.ScheduleRevision` read every :data:`CHANGE_CHECK_INTERVAL`."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.listens = connections[alias].vendor == "postgresql" and Listener.available()
        self._listener: Listener | None = None
        self._listen_failed_at: float | None = None
        self._seen: int | None = None

    def arm(self) -> None:
        """Before a pass: a change from now on ends the next :meth:`wait`."""
        if (listener := self._listen()) is not None:
            try:
                listener.drain()
                return
            except Exception as exc:
                self._failed(exc)
        try:
            self._seen = self._revision()
        except Exception:  # the database is away: the pass says so
            self._seen = None

    def wait(self, seconds: float, stopping: threading.Event) -> None:
        """Sleep ``seconds``, less if ``stopping`` is set or a schedule changes."""
        deadline = time.monotonic() + seconds
        while not stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            step = min(left, CHANGE_CHECK_INTERVAL)
            if self._listener is not None:
                try:
                    if self._listener.wait(step):
                        return
                    continue
                except Exception as exc:
                    self._failed(exc)
                    return  # a pass, noting the revision to read from now on
            if stopping.wait(step):
                return
            try:
                if self._revision() != self._seen:
                    return
            except Exception:  # the database is away: sleep as before, the pass says so
                stopping.wait(max(0.0, deadline - time.monotonic()))
                return

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _revision(self) -> int | None:
        return (ScheduleRevision.objects.using(self.alias).filter(pk=1)
                .values_list("revision", flat=True).first())

    def _listen(self) -> Listener | None:
        if self._listener is not None or not self.listens:
            return self._listener
        if (self._listen_failed_at is not None
                and time.monotonic() - self._listen_failed_at < LISTEN_RETRY_INTERVAL):
            return None
        try:
            self._listener = Listener.for_database(self.alias, SCHEDULES_CHANNEL,
                                                   application_name="qhive-scheduler")
        except Exception as exc:
            self._failed(exc)
            return None
        self._listen_failed_at = None
        return self._listener

    def _failed(self, exc: Exception) -> None:
        logger.warning("scheduler: cannot LISTEN for schedule changes on database %r (%s: %s); "
                       "reading their revision every %ss instead", self.alias,
                       type(exc).__name__, exc, CHANGE_CHECK_INTERVAL)
        self.close()
        self._listen_failed_at = time.monotonic()


_running: dict[int, Scheduler] = {}


def start_for(cluster: Any) -> None:
    """Start the scheduler of ``cluster`` (if its ``scheduler`` setting is on)."""
    if cluster.config.scheduler:
        scheduler = Scheduler(cluster.config)
        _running[id(cluster)] = scheduler
        scheduler.start()
        cluster.watch(scheduler, "scheduler")  # a scheduler that dies stops the cluster


def stop_for(cluster: Any) -> None:
    scheduler = _running.pop(id(cluster), None)
    if scheduler is not None:
        scheduler.stop()
