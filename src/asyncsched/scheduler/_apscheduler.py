"""APScheduler 3 interop: its ``CronTrigger``, ``IntervalTrigger`` and ``DateTrigger`` become our definitions.

For teams moving off APScheduler: ``register_task(name=..., function=..., trigger=CronTrigger(hour=9))``.
The trigger is converted to the stored form (``type``, ``schedule``, ``timezone``, ``start``, ``jitter``), so
the task survives restarts and shows in the API like any other; anything with no faithful equivalent
(``end_date``, ``year``/``week`` fields, ``last``/``1st mon`` expressions) is refused with a clear message
rather than approximated. Our own :class:`Trigger` objects are accepted the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..exceptions import InvalidSchedule, Problem
from ._triggers import IntervalTrigger, Trigger, format_interval

__all__ = ["to_definition"]

_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]  # APScheduler numbers Monday 0
_SIMPLE = set("0123456789*/,-")


def _refuse(message: str) -> InvalidSchedule:
    return InvalidSchedule([Problem(message, field="trigger")])


def _zone_name(zone: Any) -> str | None:
    if zone is None:
        return None
    name = getattr(zone, "key", None) or getattr(zone, "zone", None) or str(zone)
    return "UTC" if name in ("Etc/UTC", "UTC", "utc") else str(name)


def _weekdays(field: Any) -> str:
    days: list[int] = []
    for expr in field.expressions:
        kind = type(expr).__name__
        step = getattr(expr, "step", None) or 1
        if kind == "AllExpression":
            days.extend(range(0, 7, step))
        elif kind in ("RangeExpression", "WeekdayRangeExpression"):
            last = expr.last if expr.last is not None else expr.first
            days.extend(range(expr.first, last + 1, step))
        else:
            raise _refuse(f"APScheduler day_of_week expression {str(expr)!r} has no cron equivalent")
    if sorted(set(days)) == list(range(7)):
        return "*"
    return ",".join(_WEEKDAYS[d] for d in sorted(set(days)))


def _cron(trigger: Any) -> dict[str, Any]:
    fields = {field.name: field for field in trigger.fields}
    for name in ("year", "week"):
        if str(fields[name]) != "*":
            raise _refuse(f"APScheduler CronTrigger field {name}={fields[name]} has no cron equivalent")
    parts = {}
    for name in ("minute", "hour", "day", "month", "second"):
        text = str(fields[name])
        if not set(text) <= _SIMPLE:
            raise _refuse(f"APScheduler CronTrigger field {name}={text!r} has no cron equivalent")
        parts[name] = text
    dow = _weekdays(fields["day_of_week"])
    expr = f"{parts['minute']} {parts['hour']} {parts['day']} {parts['month']} {dow}"
    if parts["second"] != "0":
        expr += f" {parts['second']}"
    out: dict[str, Any] = {"type": "cron", "schedule": expr, "timezone": _zone_name(trigger.timezone)}
    if getattr(trigger, "start_date", None) is not None:
        raise _refuse("APScheduler CronTrigger start_date is not supported; register the task when due")
    return out


def to_definition(trigger: Any) -> dict[str, Any]:
    """Definition fields for an APScheduler 3 trigger (or one of ours). Raises :class:`InvalidSchedule`."""
    if isinstance(trigger, Trigger):
        out: dict[str, Any] = {
            "type": trigger.type,
            "schedule": trigger.schedule,
            "timezone": trigger.timezone,
        }
        if isinstance(trigger, IntervalTrigger) and trigger.anchor.timestamp() != 0:
            out["start"] = trigger.anchor.isoformat()
        return out
    kind = type(trigger).__name__
    module = type(trigger).__module__
    if not module.startswith("apscheduler."):
        raise _refuse(f"trigger must be an APScheduler 3 trigger or an asyncsched Trigger, got {kind}")
    if getattr(trigger, "end_date", None) is not None:
        raise _refuse(f"APScheduler {kind} end_date is not supported; disable or delete the task instead")
    if kind == "CronTrigger":
        out = _cron(trigger)
    elif kind == "IntervalTrigger":
        interval: timedelta = trigger.interval
        out = {"type": "interval", "schedule": format_interval(interval)}
        start: datetime | None = trigger.start_date
        if start is not None:  # APScheduler's default start is "now + interval": keep whole seconds
            out["start"] = start.replace(microsecond=0).isoformat()
    elif kind == "DateTrigger":
        run_date: datetime = trigger.run_date
        out = {"type": "date", "schedule": run_date.isoformat(), "timezone": _zone_name(run_date.tzinfo)}
    else:
        raise _refuse(f"APScheduler trigger {kind} is not supported; use Cron-, Interval- or DateTrigger")
    if getattr(trigger, "jitter", None):
        out["jitter"] = trigger.jitter
    if out.get("timezone") is None:
        out.pop("timezone", None)
    return out
