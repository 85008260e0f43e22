"""Triggers: when a scheduled task fires. Pure functions of time, identical on every replica.

Three kinds, chosen by a task's ``type``:

* ``cron`` — croniter's 5 fields (``minute hour day month weekday``), an optional 6th field of seconds
  **at the end** (croniter's convention: ``"*/10 * * * * 30"`` is second 30 of every tenth minute), or a
  macro (``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``).
  Evaluated on the wall clock of the task's IANA time zone (default UTC).
* ``interval`` — ``"<number> <unit>"`` with unit second/minute/hour/day/week (singular or plural, also
  ``s``/``sec``/``m``/``min``/``h``/``hr``/``d``/``w``). Absolute elapsed time, unaffected by DST. Ticks are
  ``anchor + k * interval``. A stored task's anchor is its ``start``, else the instant its schedule was
  registered (``ScheduledTask.anchor_at``, in SQL, so every replica computes the same ticks): ``"5 minutes"``
  registered at 21:02:04 fires at 21:07:04, 21:12:04... With ``align: epoch`` the anchor is the Unix epoch
  (``"5 minutes"`` at :00, :05, :10; ``"1 week"`` on Thursdays, 1970-01-01 was one). A bare
  :class:`IntervalTrigger` without ``anchor`` counts from the epoch.
* ``date`` — one instant (ISO 8601; naive times are read in the task's zone); fires once.

DST rule for cron (``docs/scheduler.md``): the expression is matched against local wall-clock times. A wall
time that does not exist (spring forward) fires once, at the first instant after the gap; an ambiguous wall
time (fall back) fires once, at its first occurrence. A tick that lands on the same instant as another is one
tick. croniter alone repeats ambiguous ticks, so it is only used on naive wall-clock times here and the
mapping to instants is ours.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from ..exceptions import InvalidSchedule, Problem

__all__ = [
    "CronTrigger",
    "DateTrigger",
    "IntervalTrigger",
    "Trigger",
    "check_date",
    "format_interval",
    "parse_interval",
    "parse_schedule",
    "parse_timezone",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_INTERVAL = timedelta(days=3660)
"""Longest interval schedule (about ten years); longer ones are refused, never overflow later."""
EARLIEST = EPOCH
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
"""Dates (``date`` schedules, interval ``start``) must lie in ``[EARLIEST, LATEST)``."""

_UNITS: dict[str, int] = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 604800),
}

_INTERVAL_RE = re.compile(r"\A\s*(?:every\s+)?(\d{1,15}(?:\.\d{1,9})?)\s*([a-zA-Z]{1,10})\s*\Z")
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MACRO_WORDS = {
    "@yearly": "every year on 1 January at 00:00",
    "@annually": "every year on 1 January at 00:00",
    "@monthly": "every month on the 1st at 00:00",
    "@weekly": "every Sunday at 00:00",
    "@daily": "every day at 00:00",
    "@midnight": "every day at 00:00",
    "@hourly": "every hour at minute 0",
}
_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def _invalid(message: str, field: str = "schedule") -> InvalidSchedule:
    return InvalidSchedule([Problem(message, field=field)])


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def parse_timezone(name: str | None) -> tzinfo:
    """An IANA zone (``None`` or empty is UTC); raises :class:`InvalidSchedule` on an unknown name."""
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid(
            f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin'", "timezone"
        ) from None


def parse_interval(text: str | int | float | timedelta) -> timedelta:
    """``"5 minutes"`` -> ``timedelta(minutes=5)``; numbers are seconds. Zero, negative, unparseable raise."""
    if isinstance(text, bool):
        raise _invalid(f"interval must be like '5 minutes', got {text!r}")
    if isinstance(text, int | float):
        return _delta(float(text), text)
    if isinstance(text, timedelta) and text <= timedelta(0):
        raise _invalid(f"interval must be positive, got {text!r}")
    return text if isinstance(text, timedelta) else _parse_text(str(text))


@lru_cache(maxsize=1024)  # 100,000 schedules share a few intervals; a replica re-reads one per tick
def _parse_text(text: str) -> timedelta:
    match = _INTERVAL_RE.match(text) if len(text) <= 100 else None
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or not unit:
        raise _invalid(
            f"interval {text[:100]!r} does not parse; write '<number> <unit>' with unit seconds, "
            "minutes, hours, days or weeks, e.g. '5 minutes'"
        )
    return _delta(float(match.group(1)) * unit, text)


def _delta(seconds: float, given: object) -> timedelta:
    """``seconds`` as a timedelta, refusing NaN, infinities and anything over :data:`MAX_INTERVAL`."""
    if not math.isfinite(seconds) or seconds > MAX_INTERVAL.total_seconds():
        raise _invalid(f"interval must be at most {MAX_INTERVAL.days} days, got {str(given)[:100]!r}")
    if seconds <= 0:
        raise _invalid(f"interval must be positive, got {str(given)[:100]!r}")
    return timedelta(seconds=seconds)


def check_date(value: datetime, field: str = "schedule") -> datetime:
    """``value`` (aware) if it lies between :data:`EARLIEST` and :data:`LATEST`, else InvalidSchedule."""
    try:
        inside = EARLIEST <= _aware(value) < LATEST
    except OverflowError:  # an offset that pushes year 1 or 9999 out of range
        inside = False
    if not inside:
        raise _invalid(
            f"{value.isoformat()} is out of range; use a time from {EARLIEST:%Y-%m-%d} to before "
            f"{LATEST:%Y-%m-%d} (UTC)",
            field,
        )
    return value


def format_interval(delta: timedelta) -> str:
    """``delta`` in the spec's form, largest unit first: ``timedelta(hours=2)`` -> ``"2 hours"``."""
    seconds = delta.total_seconds()
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    n_s: float | int = int(seconds) if seconds == int(seconds) else seconds
    return f"{n_s} second{'s' if n_s != 1 else ''}"


class Trigger(ABC):
    """When a task fires. ``next_after`` must be a pure function: every replica computes the same ticks."""

    type: str
    schedule: str
    timezone: str

    @abstractmethod
    def next_after(self, dt: datetime) -> datetime | None:
        """The first fire time strictly after ``dt`` (aware UTC), or ``None`` when it never fires again."""

    @abstractmethod
    def describe(self) -> str:
        """A human-readable phrase, e.g. ``"every 5 minutes"``, ``"at 09:00 every day (Europe/Berlin)"``."""

    def iter_after(self, dt: datetime) -> Iterator[datetime]:
        """Fire times after ``dt``, in order."""
        current: datetime | None = _aware(dt)
        while current is not None:
            current = self.next_after(current)
            if current is not None:
                yield current

    def next_runs(self, n: int, after: datetime | None = None) -> list[datetime]:
        """The next ``n`` fire times after ``after`` (default now)."""
        out: list[datetime] = []
        for tick in self.iter_after(after or datetime.now(UTC)):
            if len(out) >= n:
                break
            out.append(tick)
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.schedule!r} {self.timezone}>"


class IntervalTrigger(Trigger):
    """Every ``interval`` of absolute time from ``anchor`` (default the Unix epoch)."""

    type = "interval"

    def __init__(self, interval: str | timedelta | float, *, anchor: datetime | None = None) -> None:
        self.interval = parse_interval(interval)
        self.interval = _to_ms_precision_delta(self.interval)
        if self.interval < timedelta(seconds=1):
            raise _invalid(f"interval must be at least 1 second, got {interval!r}")
        # Whole milliseconds: the index stores ticks in ms, so every tick must survive that round trip.
        anchor = check_date(_aware(anchor), "start") if anchor is not None else None
        self.anchor = _to_ms_precision(anchor) if anchor is not None else EPOCH
        self.schedule = interval if isinstance(interval, str) else format_interval(self.interval)
        self.timezone = "UTC"
        self._step_us = self.interval // timedelta(microseconds=1)

    def next_after(self, dt: datetime) -> datetime | None:
        dt = _aware(dt)
        if dt < self.anchor:
            return self.anchor
        elapsed = (dt - self.anchor) // timedelta(microseconds=1)
        k = elapsed // self._step_us + 1
        return (self.anchor + timedelta(microseconds=k * self._step_us)).astimezone(UTC)

    def describe(self) -> str:
        return f"every {format_interval(self.interval)}"


class DateTrigger(Trigger):
    """Once, at ``run_at``."""

    type = "date"

    def __init__(self, run_at: datetime | str, timezone: str | None = None) -> None:
        zone = parse_timezone(timezone)
        if isinstance(run_at, str):
            try:
                run_at = datetime.fromisoformat(run_at.strip())
            except ValueError:
                raise _invalid(
                    f"date {run_at!r} does not parse; use ISO 8601 such as '2026-12-01T09:00:00'"
                ) from None
        if run_at.tzinfo is None:
            run_at = run_at.replace(tzinfo=zone)
        check_date(run_at)
        self.run_at = _to_ms_precision(run_at.astimezone(UTC))
        self.timezone = timezone or "UTC"
        self.schedule = run_at.isoformat()

    def next_after(self, dt: datetime) -> datetime | None:
        return self.run_at if _aware(dt) < self.run_at else None

    def describe(self) -> str:
        return f"once at {self.run_at:%Y-%m-%d %H:%M:%S} UTC"


class CronTrigger(Trigger):
    """A cron expression on the wall clock of ``timezone`` (see the module docstring for the DST rule)."""

    type = "cron"

    def __init__(self, expression: str, timezone: str | None = None) -> None:
        if not expression.strip():
            raise _invalid("cron expression must be a non-empty string such as '0 9 * * *'")
        expr = " ".join(expression.split())
        self.schedule = expr
        self.timezone = timezone or "UTC"
        self._zone = parse_timezone(timezone)
        lowered = expr.lower()
        if lowered.startswith("@"):
            if lowered not in _MACROS:
                raise _invalid(f"unknown cron macro {expr!r}; use one of {', '.join(sorted(_MACROS))}")
            self._expr = _MACROS[lowered]
        else:
            fields = expr.split(" ")
            if len(fields) not in (5, 6):
                raise _invalid(
                    f"cron expression {expr!r} has {len(fields)} fields; use 5 (minute hour day month "
                    "weekday) or 6 (the same plus seconds at the end)"
                )
            self._expr = expr
        try:
            it = croniter(self._expr, datetime(2000, 1, 1), max_years_between_matches=50)
            it.get_next(datetime)
        except (CroniterError, ValueError, KeyError) as exc:
            raise _invalid(f"invalid cron expression {expr!r}: {exc}") from None

    # Wall clock <-> instants.
    def _instant(self, wall: datetime) -> datetime:
        """The instant a naive wall time fires at: its first occurrence, or the end of the gap it falls in."""
        first = wall.replace(tzinfo=self._zone, fold=0).astimezone(UTC)
        if first.astimezone(self._zone).replace(tzinfo=None) == wall:
            return first
        # Nonexistent (spring forward): fold=0 reads it with the offset before the gap and lands after the
        # transition, fold=1 with the offset after and lands before it; the transition lies in between.
        lo = int(wall.replace(tzinfo=self._zone, fold=1).timestamp())
        hi = int(first.timestamp())
        if lo > hi:
            lo, hi = hi, lo
        after = _offset(datetime.fromtimestamp(hi, UTC), self._zone)
        while hi - lo > 1:  # the first whole second carrying the offset after the gap
            mid = (lo + hi) // 2
            if _offset(datetime.fromtimestamp(mid, UTC), self._zone) == after:
                hi = mid
            else:
                lo = mid
        return datetime.fromtimestamp(hi, UTC)

    def next_after(self, dt: datetime) -> datetime | None:
        dt = _aware(dt).astimezone(UTC)
        wall = dt.astimezone(self._zone).replace(tzinfo=None)
        it = croniter(self._expr, wall, max_years_between_matches=50)
        for _ in range(100_000):
            try:
                candidate: datetime = it.get_next(datetime)
            except CroniterError:
                return None
            instant = self._instant(candidate)
            if instant > dt:
                return instant
        return None  # pragma: no cover - a schedule this dense cannot be behind by 100k ticks

    def describe(self) -> str:
        zone = "" if self.timezone in ("UTC", "utc") else f" ({self.timezone})"
        macro = _MACRO_WORDS.get(self.schedule.lower())
        return (macro or _describe_cron(self._expr)) + zone


def _to_ms_precision(dt: datetime) -> datetime:
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def _to_ms_precision_delta(delta: timedelta) -> timedelta:
    return timedelta(milliseconds=delta // timedelta(milliseconds=1))


def _offset(instant: datetime, zone: tzinfo) -> timedelta | None:
    return instant.astimezone(zone).utcoffset()


def _describe_cron(expr: str) -> str:
    fields = expr.split(" ")
    minute, hour, dom, month, dow = fields[:5]
    second = fields[5] if len(fields) == 6 else "0"
    if dom == "*" and month == "*" and dow == "*":
        if second == "0" and hour == "*":
            if minute == "*":
                return "every minute"
            if minute.startswith("*/") and minute[2:].isdigit():
                return f"every {minute[2:]} minutes"
            if minute.isdigit():
                return f"every hour at minute {int(minute)}"
        if second == "0" and minute.isdigit() and hour.isdigit():
            return f"at {int(hour):02d}:{int(minute):02d} every day"
        if second == "0" and minute.isdigit() and hour.startswith("*/") and hour[2:].isdigit():
            return f"every {hour[2:]} hours at minute {int(minute)}"
        if minute == "*" and hour == "*" and second.startswith("*/") and second[2:].isdigit():
            return f"every {second[2:]} seconds"
        if minute == "*" and hour == "*" and second == "*":
            return "every second"
    if second == "0" and minute.isdigit() and hour.isdigit() and dom == "*" and month == "*":
        if dow.isdigit() and 0 <= int(dow) <= 7:
            return f"at {int(hour):02d}:{int(minute):02d} every {_DAYS[int(dow) % 7]}"
        if dow.lower() in ("1-5", "mon-fri"):
            return f"at {int(hour):02d}:{int(minute):02d} on weekdays"
    return f"cron '{expr}'"


def parse_schedule(
    type: str,
    schedule: str | timedelta | datetime,
    timezone: str | None = None,
    *,
    start: datetime | None = None,
) -> Trigger:
    """Validate a schedule and return its trigger (``.next_after(dt)``, ``.describe()``).

    ``type`` is ``"cron"``, ``"interval"`` or ``"date"``; ``timezone`` an IANA name (cron and naive dates).
    Raises :class:`~asyncsched.exceptions.InvalidSchedule` naming the field and the fix; the web layer turns
    it into a 422.
    """
    kind = str(type).lower()
    if kind == "cron":
        if not isinstance(schedule, str):
            raise _invalid(f"cron schedule must be a string such as '0 9 * * *', got {schedule!r}")
        return CronTrigger(schedule, timezone)
    if kind == "interval":
        if isinstance(schedule, datetime):
            raise _invalid(f"interval schedule must be like '5 minutes', got {schedule!r}")
        if timezone:
            parse_timezone(timezone)
        return IntervalTrigger(schedule, anchor=start)
    if kind == "date":
        if isinstance(schedule, timedelta):
            raise _invalid(f"date schedule must be an ISO 8601 time, got {schedule!r}")
        return DateTrigger(schedule, timezone)
    raise InvalidSchedule([Problem(f"type must be 'interval', 'cron' or 'date', got {type!r}", field="type")])
