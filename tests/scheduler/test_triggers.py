"""Schedules: intervals in the spec's form, cron (5/6 fields, macros), time zones and the DST rule."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from asyncsched import InvalidSchedule
from asyncsched.scheduler import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    format_interval,
    parse_interval,
    parse_schedule,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5 minutes", timedelta(minutes=5)),
        ("1 minute", timedelta(minutes=1)),
        ("1 hour", timedelta(hours=1)),
        ("2 hours", timedelta(hours=2)),
        ("30 seconds", timedelta(seconds=30)),
        ("1 second", timedelta(seconds=1)),
        ("2 days", timedelta(days=2)),
        ("1 day", timedelta(days=1)),
        ("1 week", timedelta(weeks=1)),
        ("3 weeks", timedelta(weeks=3)),
        ("  10   Minutes ", timedelta(minutes=10)),
        ("90s", timedelta(seconds=90)),
        ("every 15 min", timedelta(minutes=15)),
    ],
)
def test_intervals_in_the_spec_form(text: str, expected: timedelta) -> None:
    assert parse_interval(text) == expected
    assert parse_schedule("interval", text).next_after(utc(2026, 1, 1)) is not None


@pytest.mark.parametrize(
    "text", ["0 minutes", "-5 minutes", "five minutes", "5 fortnights", "", "5", "minutes"]
)
def test_bad_intervals_are_rejected(text: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_schedule("interval", text)
    assert info.value.problems[0].field == "schedule"


def test_interval_ticks_are_anchored_and_identical_everywhere() -> None:
    trigger = parse_schedule("interval", "5 minutes")
    assert trigger.next_runs(3, utc(2026, 1, 1, 0, 2)) == [
        utc(2026, 1, 1, 0, 5),
        utc(2026, 1, 1, 0, 10),
        utc(2026, 1, 1, 0, 15),
    ]
    assert trigger.next_after(utc(2026, 1, 1, 0, 5)) == utc(2026, 1, 1, 0, 10)  # strictly after
    anchored = IntervalTrigger("1 hour", anchor=utc(2026, 1, 1, 0, 20))
    assert anchored.next_after(utc(2026, 1, 1, 5, 0)) == utc(2026, 1, 1, 5, 20)
    assert anchored.next_after(utc(2025, 1, 1)) == utc(2026, 1, 1, 0, 20)
    assert trigger.describe() == "every 5 minutes"
    assert format_interval(timedelta(days=7)) == "1 week"
    assert format_interval(timedelta(seconds=90)) == "90 seconds"


def test_intervals_are_elapsed_time_across_dst() -> None:
    trigger = parse_schedule("interval", "1 hour", "Europe/Berlin")
    runs = trigger.next_runs(4, utc(2026, 3, 28, 23, 30))
    assert [b - a for a, b in itertools.pairwise(runs)] == [timedelta(hours=1)] * 3


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("0 9 * * *", utc(2026, 1, 1, 10), utc(2026, 1, 2, 9)),
        ("*/15 * * * *", utc(2026, 1, 1, 10, 1), utc(2026, 1, 1, 10, 15)),
        ("0 0 * * 1", utc(2026, 1, 1), utc(2026, 1, 5)),  # 2026-01-05 is a Monday
        ("* * * * * 30", utc(2026, 1, 1, 10, 0, 31), utc(2026, 1, 1, 10, 1, 30)),  # 6th field: seconds
        ("* * * * * */10", utc(2026, 1, 1, 10, 0, 1), utc(2026, 1, 1, 10, 0, 10)),
        ("@hourly", utc(2026, 1, 1, 10, 5), utc(2026, 1, 1, 11)),
        ("@daily", utc(2026, 1, 1, 10), utc(2026, 1, 2)),
        ("@weekly", utc(2026, 1, 1), utc(2026, 1, 4)),  # Sunday
        ("@monthly", utc(2026, 1, 15), utc(2026, 2, 1)),
        ("@yearly", utc(2026, 1, 15), utc(2027, 1, 1)),
        ("0 9 * * mon-fri", utc(2026, 1, 3), utc(2026, 1, 5, 9)),
    ],
)
def test_cron_expressions(expr: str, after: datetime, expected: datetime) -> None:
    assert parse_schedule("cron", expr).next_after(after) == expected


@pytest.mark.parametrize(
    "expr",
    ["61 * * * *", "* * *", "* * * * * * *", "@reboot", "@often", "0 0 30 2 *", "*/0 * * * *", "hello"],
)
def test_invalid_cron_is_rejected(expr: str) -> None:
    with pytest.raises(InvalidSchedule):
        parse_schedule("cron", expr)


def test_unknown_type_and_zone() -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_schedule("weekly", "x")
    assert info.value.problems[0].field == "type"
    with pytest.raises(InvalidSchedule) as info:
        parse_schedule("cron", "0 9 * * *", "Mars/Olympus")
    assert info.value.problems[0].field == "timezone"


def test_cron_in_a_time_zone() -> None:
    trigger = parse_schedule("cron", "0 9 * * *", "America/New_York")
    assert trigger.next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 14)  # EST = UTC-5
    assert trigger.next_after(utc(2026, 7, 1)) == utc(2026, 7, 1, 13)  # EDT = UTC-4
    assert trigger.describe() == "at 09:00 every day (America/New_York)"


def test_describe() -> None:
    assert parse_schedule("cron", "* * * * *").describe() == "every minute"
    assert parse_schedule("cron", "*/5 * * * *").describe() == "every 5 minutes"
    assert parse_schedule("cron", "0 0 * * 1").describe() == "at 00:00 every Monday"
    assert parse_schedule("cron", "@daily").describe() == "every day at 00:00"
    assert parse_schedule("cron", "0 9 * * 1-5").describe() == "at 09:00 on weekdays"
    assert parse_schedule("cron", "5 4 1 * *").describe() == "cron '5 4 1 * *'"


# DST, Europe/Berlin 2026: spring forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC);
# fall back 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC). Rule: wall clock; a nonexistent time fires once
# at the first instant after the gap; an ambiguous time fires once, at its first occurrence.


def test_spring_forward_nonexistent_time_fires_once_after_the_gap() -> None:
    daily = CronTrigger("30 2 * * *", "Europe/Berlin")
    runs = daily.next_runs(3, utc(2026, 3, 27, 12))
    assert runs == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    assert runs[1].astimezone(BERLIN).strftime("%H:%M %Z") == "03:00 CEST"


def test_spring_forward_hourly_neither_repeats_nor_skips() -> None:
    hourly = CronTrigger("0 * * * *", "Europe/Berlin")
    runs = hourly.next_runs(4, utc(2026, 3, 28, 23, 30))
    local = [r.astimezone(BERLIN).strftime("%H:%M") for r in runs]
    assert local == ["01:00", "03:00", "04:00", "05:00"]  # 02:00 does not exist; 03:00 runs once
    assert len(set(runs)) == len(runs)
    half = CronTrigger("*/30 * * * *", "Europe/Berlin").next_runs(4, utc(2026, 3, 29, 0, 15))
    assert half == [
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 29, 2),
    ]


def test_fall_back_ambiguous_time_fires_once_at_first_occurrence() -> None:
    daily = CronTrigger("30 2 * * *", "Europe/Berlin")
    runs = daily.next_runs(3, utc(2026, 10, 24, 12))
    assert runs == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]
    assert runs[0].astimezone(BERLIN).strftime("%H:%M %Z") == "02:30 CEST"


def test_fall_back_half_hourly_runs_each_wall_time_once() -> None:
    trigger = CronTrigger("*/30 * * * *", "Europe/Berlin")
    runs = trigger.next_runs(6, utc(2026, 10, 24, 23, 15))
    local = [r.astimezone(BERLIN).strftime("%H:%M %Z") for r in runs]
    assert local == ["01:30 CEST", "02:00 CEST", "02:30 CEST", "03:00 CET", "03:30 CET", "04:00 CET"]
    # Asked from inside the repeated hour (02:15 CET, second occurrence), the next run is 03:00 CET.
    assert trigger.next_after(utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 25, 2, 0)


def test_date_trigger_fires_once() -> None:
    trigger = DateTrigger("2026-12-01T09:00:00", "Europe/Berlin")
    assert trigger.next_after(utc(2026, 1, 1)) == utc(2026, 12, 1, 8)
    assert trigger.next_after(utc(2026, 12, 1, 8)) is None
    assert trigger.next_runs(5, utc(2026, 1, 1)) == [utc(2026, 12, 1, 8)]
    with pytest.raises(InvalidSchedule):
        parse_schedule("date", "next tuesday")
