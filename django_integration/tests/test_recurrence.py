"""``next_run`` arithmetic of every schedule type (``qhive_django.recurrence``),
with month ends, leap days and both DST changes of Europe/Amsterdam."""

import datetime as dt
import itertools
import zoneinfo

import pytest
from qhive_django import recurrence as r

UTC = dt.UTC
AMS = zoneinfo.ZoneInfo("Europe/Amsterdam")
NY = zoneinfo.ZoneInfo("America/New_York")


def at(*fields, tz=UTC):
    return dt.datetime(*fields, tzinfo=tz)


def series(kind, anchor, count, zone=UTC, **options):
    """The anchor and the ``count - 1`` slots after it."""
    found = list(zip(range(count), r.slots(kind, anchor, anchor, zone, **options), strict=False))
    return [slot for _, slot in found]


def walls(slots, zone):
    return [s.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") for s in slots]


# --------------------------------------------------------------------------- every type


@pytest.mark.parametrize(("kind", "options", "expected"), [
    (r.SECONDS, {"seconds": 10}, at(2026, 5, 4, 9, 0, 10)),
    (r.MINUTES, {"minutes": 15}, at(2026, 5, 4, 9, 15)),
    (r.MINUTES, {}, at(2026, 5, 4, 9, 1)),  # Django Q2: minutes or 1
    (r.HOURLY, {}, at(2026, 5, 4, 10)),
    (r.DAILY, {}, at(2026, 5, 5, 9)),
    (r.WEEKLY, {}, at(2026, 5, 11, 9)),
    (r.BIWEEKLY, {}, at(2026, 5, 18, 9)),
    (r.MONTHLY, {}, at(2026, 6, 4, 9)),
    (r.BIMONTHLY, {}, at(2026, 7, 4, 9)),
    (r.QUARTERLY, {}, at(2026, 8, 4, 9)),
    (r.YEARLY, {}, at(2027, 5, 4, 9)),
    (r.CRON, {"cron": "30 22 * * 1-5"}, at(2026, 5, 4, 22, 30)),
], ids=lambda v: v if isinstance(v, str) else None)
def test_the_slot_after_the_first(kind, options, expected):
    start = at(2026, 5, 4, 9)  # a Monday
    assert r.slot_after(kind, start, start, UTC, **options) == expected


def test_once_has_no_second_slot():
    start = at(2026, 5, 4, 9)
    assert r.slot_after(r.ONCE, start, start, UTC) is None
    assert r.slot_after(r.ONCE, start, start - dt.timedelta(days=1), UTC) == start


def test_cron_in_its_time_zone():
    # 09:00 on weekdays in New York: 13:00 UTC in summer, 14:00 in winter.
    start = at(2026, 10, 30, 12)  # a Friday
    got = series(r.CRON, r.slot_after(r.CRON, start, start, NY, cron="0 9 * * 1-5"), 3, NY,
                 cron="0 9 * * 1-5")
    assert [s.astimezone(UTC) for s in got] == [at(2026, 10, 30, 13), at(2026, 11, 2, 14),
                                                at(2026, 11, 3, 14)]


def test_a_cron_anchor_starts_at_the_first_matching_time():
    anchor = at(2026, 5, 4, 9, 7)
    assert r.slot_after(r.CRON, anchor, anchor - dt.timedelta(days=3), UTC,
                        cron="*/15 * * * *") == at(2026, 5, 4, 9, 15)
    on_time = at(2026, 5, 4, 9, 15)
    assert r.slot_after(r.CRON, on_time, on_time - dt.timedelta(seconds=1), UTC,
                        cron="*/15 * * * *") == on_time


def test_cron_with_seconds():
    start = at(2026, 5, 4, 9)
    assert series(r.CRON, start, 3, cron="* * * * * */20") == [
        start, at(2026, 5, 4, 9, 0, 20), at(2026, 5, 4, 9, 0, 40)]


def test_check_cron_names_the_problem():
    r.check_cron("0 22 * * 1-5")
    with pytest.raises(ValueError, match="'61 \\* \\* \\* \\*' is not a cron expression"):
        r.check_cron("61 * * * *")
    with pytest.raises(ValueError, match="not a cron expression"):
        r.check_cron("every day")


# --------------------------------------------------------------------------- month ends, leap days


def test_jan_31_plus_one_month_is_the_end_of_february_then_the_31st_again():
    assert series(r.MONTHLY, at(2027, 1, 31, 8), 4) == [
        at(2027, 1, 31, 8), at(2027, 2, 28, 8), at(2027, 3, 31, 8), at(2027, 4, 30, 8)]
    assert r.slot_after(r.MONTHLY, at(2028, 1, 31, 8), at(2028, 1, 31, 8), UTC) == \
        at(2028, 2, 29, 8), "a leap year"


def test_quarterly_and_bimonthly_from_a_month_end():
    assert series(r.QUARTERLY, at(2026, 11, 30), 3) == [
        at(2026, 11, 30), at(2027, 2, 28), at(2027, 5, 30)]
    assert series(r.BIMONTHLY, at(2026, 12, 31), 3) == [
        at(2026, 12, 31), at(2027, 2, 28), at(2027, 4, 30)]


def test_feb_29_plus_one_year_is_feb_28_and_feb_29_again_in_a_leap_year():
    assert series(r.YEARLY, at(2028, 2, 29, 12), 5) == [
        at(2028, 2, 29, 12), at(2029, 2, 28, 12), at(2030, 2, 28, 12), at(2031, 2, 28, 12),
        at(2032, 2, 29, 12)]


# --------------------------------------------------------------------------- DST


def test_daily_keeps_its_wall_clock_hour_across_both_dst_changes_in_amsterdam():
    # Clocks go forward on Sunday 29 March 2026 and back on Sunday 25 October 2026.
    spring = series(r.DAILY, at(2026, 3, 27, 1, tz=AMS), 4, AMS)
    assert walls(spring, AMS) == ["2026-03-27 01:00 CET", "2026-03-28 01:00 CET",
                                  "2026-03-29 01:00 CET", "2026-03-30 01:00 CEST"]
    autumn = series(r.DAILY, at(2026, 10, 23, 1, tz=AMS), 4, AMS)
    assert walls(autumn, AMS) == ["2026-10-23 01:00 CEST", "2026-10-24 01:00 CEST",
                                  "2026-10-25 01:00 CEST", "2026-10-26 01:00 CET"]
    # ... which is 23 and 25 hours of elapsed time on those days
    assert spring[3] - spring[2] == dt.timedelta(hours=23)
    assert autumn[3] - autumn[2] == dt.timedelta(hours=25)


def test_weekly_and_monthly_keep_their_wall_clock_hour_too():
    weekly = series(r.WEEKLY, at(2026, 3, 22, 9, tz=AMS), 2, AMS)
    assert walls(weekly, AMS) == ["2026-03-22 09:00 CET", "2026-03-29 09:00 CEST"]
    monthly = series(r.MONTHLY, at(2026, 10, 10, 9, tz=AMS), 2, AMS)
    assert walls(monthly, AMS) == ["2026-10-10 09:00 CEST", "2026-11-10 09:00 CET"]


def test_hourly_and_minutes_count_elapsed_time_across_dst():
    hourly = series(r.HOURLY, at(2026, 10, 25, 0, 30, tz=AMS), 4, AMS)
    assert [b - a for a, b in itertools.pairwise(hourly)] == [dt.timedelta(hours=1)] * 3
    assert walls(hourly, AMS) == ["2026-10-25 00:30 CEST", "2026-10-25 01:30 CEST",
                                  "2026-10-25 02:30 CEST", "2026-10-25 02:30 CET"]


def test_a_wall_time_in_the_skipped_hour_runs_after_it_and_comes_back_the_next_day():
    nightly = series(r.DAILY, at(2026, 3, 28, 2, 30, tz=AMS), 3, AMS)
    assert walls(nightly, AMS) == ["2026-03-28 02:30 CET", "2026-03-29 03:30 CEST",
                                   "2026-03-30 02:30 CEST"]


def test_a_cron_time_in_the_repeated_hour_runs_once():
    start = at(2026, 10, 24, 2, 30, tz=AMS)
    nightly = series(r.CRON, start, 3, AMS, cron="30 2 * * *")
    assert walls(nightly, AMS) == ["2026-10-24 02:30 CEST", "2026-10-25 02:30 CEST",
                                   "2026-10-26 02:30 CET"]


def test_cron_through_the_skipped_hour_never_goes_back_in_time():
    start = at(2026, 3, 29, 1, 40, tz=AMS)
    got = series(r.CRON, start, 6, AMS, cron="*/20 * * * *")
    assert got == sorted(set(got)), "strictly increasing"
    assert walls(got, AMS) == ["2026-03-29 01:40 CET", "2026-03-29 03:00 CEST",
                               "2026-03-29 03:20 CEST", "2026-03-29 03:40 CEST",
                               "2026-03-29 04:00 CEST", "2026-03-29 04:20 CEST"]


# --------------------------------------------------------------------------- skipping ahead


@pytest.mark.parametrize(("kind", "options"), [
    (r.SECONDS, {"seconds": 7}), (r.MINUTES, {"minutes": 5}), (r.HOURLY, {}), (r.DAILY, {}),
    (r.BIWEEKLY, {}), (r.MONTHLY, {}), (r.QUARTERLY, {}), (r.YEARLY, {}),
    (r.CRON, {"cron": "15 4 * * *"}),
], ids=lambda v: v if isinstance(v, str) else "")
def test_the_first_slot_after_a_later_moment_is_on_the_calendar(kind, options):
    """``slot_after(moment)`` jumps straight to the first slot after ``moment`` (catch_up
    off): the same slot that stepping one by one reaches."""
    anchor = at(2025, 1, 31, 4, 15, tz=AMS)
    moment = at(2026, 7, 9, 13, 2, 11, tz=AMS)
    jumped = r.slot_after(kind, anchor, moment, AMS, **options)
    assert jumped > moment
    if kind in (r.SECONDS, r.MINUTES, r.HOURLY):
        step = r.step_of(kind, **options)
        assert (jumped - anchor) % step == dt.timedelta(0)
        assert jumped - step <= moment
    else:
        stepped = next(s for s in r.slots(kind, anchor, anchor, AMS, **options) if s > moment)
        assert jumped == stepped


def test_skipping_a_year_of_a_one_second_schedule_is_arithmetic():
    anchor = at(2025, 1, 1)
    assert r.slot_after(r.SECONDS, anchor, at(2026, 1, 1, 0, 0, 0, 500), UTC, seconds=1) == \
        at(2026, 1, 1, 0, 0, 1)
