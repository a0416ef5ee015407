"""When a schedule runs: the slots of each schedule type, in a time zone.

A schedule's slots are counted from its *anchor* — the ``next_run`` it was given
when created or last edited — not from the previous slot, so nothing drifts:

* ``SECONDS``, ``MINUTES``, ``HOURLY``: fixed steps of elapsed time
  (``anchor + k * step``), the same across DST changes.
* ``DAILY``, ``WEEKLY``, ``BIWEEKLY``: the anchor's wall-clock time on every 1st,
  7th or 14th day, in the schedule's time zone: 01:00 stays 01:00 when the
  clocks change.
* ``MONTHLY``, ``BIMONTHLY``, ``QUARTERLY``, ``YEARLY``: the anchor's day of the
  month, clamped to the month's length — the 31st runs on Feb 28 (29 in leap
  years), then on Mar 31 again; Feb 29 runs on Feb 28 in other years. (Django Q2
  moves to the clamped day for good: 31st, 28th, 28th, ...)
* ``CRON``: the expression's wall-clock times in the time zone (croniter), from
  the anchor on.

A wall-clock time that does not exist (the hour skipped in spring) runs at the
same offset after the change (02:30 -> 03:30); a time that occurs twice (the hour
repeated in autumn) runs once, the first time. The next slot is computed from
the anchor again, so a 02:30 schedule is back at 02:30 the day after.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterator

ONCE, SECONDS, MINUTES, HOURLY = "O", "S", "I", "H"
DAILY, WEEKLY, BIWEEKLY = "D", "W", "BW"
MONTHLY, BIMONTHLY, QUARTERLY, YEARLY = "M", "BM", "Q", "Y"
CRON = "C"

_DAYS = {DAILY: 1, WEEKLY: 7, BIWEEKLY: 14}
_MONTHS = {MONTHLY: 1, BIMONTHLY: 2, QUARTERLY: 3, YEARLY: 12}


def step_of(kind: str, *, minutes: int | None = None,
            seconds: int | None = None) -> dt.timedelta | None:
    """The fixed step of a ``SECONDS``, ``MINUTES`` or ``HOURLY`` schedule, else None."""
    if kind == SECONDS:
        return dt.timedelta(seconds=seconds or 1)
    if kind == MINUTES:
        return dt.timedelta(minutes=minutes or 1)
    if kind == HOURLY:
        return dt.timedelta(hours=1)
    return None


def slot_after(kind: str, anchor: dt.datetime, moment: dt.datetime, zone: dt.tzinfo, *,
               minutes: int | None = None, seconds: int | None = None,
               cron: str | None = None) -> dt.datetime | None:
    """The first slot of the schedule strictly after ``moment`` (None: there is none).

    :param kind: a schedule type code (``"D"``, ``"C"``, ...).
    :param anchor: the first slot (aware); every other one is counted from it.
    :param moment: aware; the result is later than it.
    :param zone: the time zone of wall-clock types and cron expressions.
    :return: in UTC.
    """
    # In UTC: Python compares and subtracts datetimes of one tzinfo by their wall
    # clocks, which is wrong across a DST change.
    anchor, moment = anchor.astimezone(dt.UTC), moment.astimezone(dt.UTC)
    if anchor > moment:
        return anchor if kind != CRON else _cron_after(cron, anchor - _TICK, zone)
    if kind == ONCE:
        return None
    step = step_of(kind, minutes=minutes, seconds=seconds)
    if step is not None:
        return anchor + ((moment - anchor) // step + 1) * step
    if kind == CRON:
        return _cron_after(cron, moment, zone)
    if kind in _DAYS:
        days = _DAYS[kind]
        passed = (moment.astimezone(zone).date() - anchor.astimezone(zone).date()).days
        return _first_after(lambda k: _wall_days(anchor, k * days, zone), passed // days - 1,
                            moment)
    if kind in _MONTHS:
        months = _MONTHS[kind]
        local, start = moment.astimezone(zone), anchor.astimezone(zone)
        passed = (local.year - start.year) * 12 + local.month - start.month
        return _first_after(lambda k: _wall_months(anchor, k * months, zone),
                            passed // months - 1, moment)
    raise ValueError(f"unknown schedule type {kind!r}")


def slots(kind: str, anchor: dt.datetime, first: dt.datetime, zone: dt.tzinfo,
          **options: object) -> Iterator[dt.datetime]:
    """``first`` and the slots after it, in order, for as long as there are any."""
    slot: dt.datetime | None = first
    while slot is not None:
        yield slot
        slot = slot_after(kind, anchor, slot, zone, **options)


def check_cron(expression: str) -> None:
    """Raise ``ValueError`` naming the problem when croniter cannot read ``expression``."""
    from croniter import croniter  # here, not at import: ~10 ms of every process's start

    try:
        croniter.expand(expression)
    except Exception as exc:  # croniter's errors are ValueErrors, KeyErrors, ...
        raise ValueError(f"{expression!r} is not a cron expression croniter accepts: "
                         f"{exc}") from exc


# --------------------------------------------------------------------------- internals

_TICK = dt.timedelta(microseconds=1)


def _first_after(slot_at, k: int, moment: dt.datetime) -> dt.datetime:
    """The first ``slot_at(k)``, from ``k`` (at least 0) up, that is later than ``moment``."""
    k = max(k, 0)
    while (slot := slot_at(k)) <= moment:
        k += 1
    return slot


def localize(wall: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """The instant (in UTC) of a naive wall-clock time in ``zone``: the first of two
    (autumn), the same offset past the change for a time that does not exist (spring)."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(dt.UTC)


def _wall_days(anchor: dt.datetime, days: int, zone: dt.tzinfo) -> dt.datetime:
    wall = anchor.astimezone(zone).replace(tzinfo=None) + dt.timedelta(days=days)
    return localize(wall, zone)


def _wall_months(anchor: dt.datetime, months: int, zone: dt.tzinfo) -> dt.datetime:
    wall = anchor.astimezone(zone).replace(tzinfo=None)
    index = wall.year * 12 + wall.month - 1 + months
    year, month = divmod(index, 12)
    day = min(wall.day, calendar.monthrange(year, month + 1)[1])
    return localize(wall.replace(year=year, month=month + 1, day=day), zone)


def _cron_after(expression: str | None, moment: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    # croniter walks naive wall-clock times: each wall time once, whatever the clocks
    # do; localize() then places it. A wall time in the skipped hour can land on an
    # instant a later wall time also has: keep only slots later than the last one.
    if not expression:
        raise ValueError("a cron schedule needs a cron expression")
    from croniter import croniter  # late: see check_cron

    walls = croniter(expression, moment.astimezone(zone).replace(tzinfo=None))
    while True:
        slot = localize(walls.get_next(dt.datetime), zone)
        if slot > moment:
            return slot
