"""Validation of one task definition (from YAML, code or the API) into a :class:`ScheduledTask`.

Every problem is collected, none raised early, so a file reports all its errors at once. Each
:class:`~asyncsched.exceptions.Problem` names the field; the YAML loader adds file, line and task.
"""

from __future__ import annotations

import enum
import importlib
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ..exceptions import InvalidSchedule, Problem, TaskDefinitionError
from ..store.models import ScheduledTask
from ._triggers import Trigger, parse_interval, parse_schedule, parse_timezone

__all__ = [
    "ALIGNMENTS",
    "FIELDS",
    "MisfirePolicy",
    "anchored_at_registration",
    "build_task",
    "check_function",
    "task_trigger",
    "validate_definition",
]


class MisfirePolicy(enum.StrEnum):
    """What to do with ticks missed while every scheduler was down (or late beyond the grace time)."""

    COALESCE = "coalesce"
    """One run for all the missed ticks (the default)."""
    SKIP = "skip"
    """No run for missed ticks; resume at the next tick."""
    ALL = "all"
    """One run per missed tick, at most :data:`MISFIRE_ALL_LIMIT` (the latest ones)."""


MISFIRE_ALL_LIMIT = 100
DEFAULT_GRACE = 60.0
"""Seconds a tick may be late and still count as on time (relevant to ``skip``)."""

FIELDS: dict[str, str] = {
    "name": "a unique name within the agent",
    "description": "free text",
    "enabled": "true or false (default true)",
    "type": "interval, cron or date",
    "schedule": "'5 minutes', '0 9 * * *' or an ISO time",
    "function": "'package.module:function'",
    "args": "a list",
    "kwargs": "a mapping",
    "queue": "the queue to enqueue into (default 'default')",
    "timezone": "an IANA time zone (default UTC)",
    "timeout": "job timeout: seconds or '5 minutes'",
    "retry": "retries: a count, or {max: N, interval: seconds or [seconds, ...]}",
    "jitter": "random delay up to this: seconds or '30 seconds'",
    "misfire": "coalesce (default), skip or all",
    "misfire_grace": "seconds a tick may be late and still run: seconds or '1 minute'",
    "start": "interval anchor: an ISO time (default: when the task is registered)",
    "align": "interval ticks: 'registration' (default: every interval from registration or start) or "
    "'epoch' (multiples of the interval since 1970-01-01 UTC: '5 minutes' at :00, :05...)",
}
"""Every key a task definition accepts, with what it takes (used in error messages)."""

ALIGNMENTS = ("registration", "epoch")
"""Where an interval's ticks count from when no ``start`` is given."""

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
_FUNC_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def check_function(path: str) -> str | None:
    """``None`` if ``"pkg.module:attr"`` imports and is callable, else what is wrong."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is a finding, not a crash
        return f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            return f"module {module_name!r} has no attribute {attr!r}"
        obj = getattr(obj, part)
    if not callable(obj):
        return f"{path!r} is not callable"
    return None


def _seconds(value: Any, field: str, problems: list[Problem], *, zero_ok: bool = False) -> float | None:
    if isinstance(value, bool):
        problems.append(
            Problem(f"must be seconds or a duration like '30 seconds', got {value!r}", field=field)
        )
        return None
    if isinstance(value, int | float) and zero_ok and value == 0:
        return 0.0
    try:
        return parse_interval(value).total_seconds()
    except InvalidSchedule:
        problems.append(Problem(f"must be a positive duration like '30 seconds', got {value!r}", field=field))
        return None


def validate_definition(
    data: Mapping[str, Any], *, check_import: bool = True
) -> tuple[dict[str, Any], list[Problem]]:
    """Check one definition; returns the normalized column values and every problem found."""
    problems: list[Problem] = []

    def bad(field: str, message: str) -> None:
        problems.append(Problem(message, field=field))

    for key in data:
        if key not in FIELDS:
            bad(str(key), f"unknown key {key!r}; allowed keys: {', '.join(FIELDS)}")
    out: dict[str, Any] = {}
    name = data.get("name")
    if name is None:
        bad("name", "missing (every task needs a name)")
    elif not isinstance(name, str) or not _NAME_RE.match(name):
        bad("name", f"must be 1-200 letters, digits, '_', '-' or '.', got {name!r}")
    else:
        out["name"] = name
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        bad("description", f"must be text, got {type(description).__name__}")
    out["description"] = description
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        bad("enabled", f"must be true or false, got {enabled!r}")
    out["enabled"] = enabled is not False
    kind = data.get("type")
    if kind is None:
        bad("type", "missing; use interval, cron or date")
    elif kind not in ("interval", "cron", "date"):
        bad("type", f"must be interval, cron or date, got {kind!r}")
    out["type"] = kind
    tz = data.get("timezone")
    if tz is not None and not isinstance(tz, str):
        bad("timezone", f"must be an IANA name such as 'Europe/Berlin', got {tz!r}")
        tz = None
    elif tz is not None:
        try:
            parse_timezone(tz)
        except InvalidSchedule as exc:
            bad("timezone", exc.problems[0].message)
            tz = None
    out["timezone"] = tz or "UTC"
    start = data.get("start")
    options: dict[str, Any] = {}
    if start is not None:
        if isinstance(start, str):
            try:
                start = datetime.fromisoformat(start)
            except ValueError:
                bad("start", f"must be an ISO time such as '2026-01-01T00:00:00Z', got {start!r}")
                start = None
        if start is not None and not isinstance(start, datetime):
            bad("start", f"must be an ISO time, got {start!r}")
            start = None
        if isinstance(start, datetime):
            options["start"] = start.isoformat()
    align = data.get("align")
    if align is not None:
        if align not in ALIGNMENTS:
            bad("align", f"must be 'registration' or 'epoch', got {align!r}")
        elif kind != "interval":
            bad("align", f"applies to interval tasks only (this one is {kind!r}); remove it")
        elif start is not None and align == "epoch":
            bad("align", "'epoch' and 'start' both set the anchor of the ticks; keep one")
        elif align == "epoch":  # 'registration' is the default and is not stored
            options["align"] = "epoch"
    schedule = data.get("schedule")
    if schedule is None:
        bad("schedule", "missing; e.g. '5 minutes' (interval) or '0 9 * * *' (cron)")
    elif kind in ("interval", "cron", "date"):
        if isinstance(schedule, datetime) and kind == "date":
            schedule = schedule.isoformat()
        if isinstance(schedule, int | float) and not isinstance(schedule, bool) and kind == "interval":
            schedule = f"{schedule} seconds"
        if not isinstance(schedule, str):
            bad("schedule", f"must be a string, got {type(schedule).__name__} {schedule!r}")
        else:
            try:
                anchor = start if isinstance(start, datetime) else None
                parse_schedule(kind, schedule, tz, start=anchor)
                out["schedule"] = schedule.strip()
            except InvalidSchedule as exc:
                for problem in exc.problems:
                    bad(problem.field or "schedule", problem.message)
    function = data.get("function")
    if function is None:
        bad("function", "missing; e.g. 'app.services.email:process_pending_emails_task'")
    elif not isinstance(function, str) or not _FUNC_RE.match(function.strip()):
        bad("function", f"must look like 'package.module:function', got {function!r}")
    else:
        function = function.strip()
        error = check_function(function) if check_import else None
        if error:
            bad("function", error)
        out["function"] = function
    args = data.get("args", [])
    if args is None:
        args = []
    if not isinstance(args, list | tuple):
        bad("args", f"must be a list, got {type(args).__name__}")
    out["args"] = list(args) if isinstance(args, list | tuple) else []
    kwargs = data.get("kwargs", {})
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        bad("kwargs", "must be a mapping of names to values")
        kwargs = {}
    out["kwargs"] = dict(kwargs)
    queue = data.get("queue", "default")
    if not isinstance(queue, str) or not queue or not _NAME_RE.match(queue):
        bad("queue", f"must be a queue name (letters, digits, '_', '-', '.'), got {queue!r}")
    out["queue"] = queue if isinstance(queue, str) else "default"
    if data.get("timeout") is not None:
        seconds = _seconds(data["timeout"], "timeout", problems)
        if seconds is not None:
            options["timeout"] = int(seconds) if seconds == int(seconds) else seconds
    if data.get("retry") is not None:
        retry = data["retry"]
        if isinstance(retry, int) and not isinstance(retry, bool) and retry >= 0:
            options["retry"] = {"max": retry, "interval": 0}
        elif isinstance(retry, Mapping) and set(retry) <= {"max", "interval"}:
            max_ = retry.get("max")
            interval = retry.get("interval", 0)
            ok_interval = (
                isinstance(interval, int) and not isinstance(interval, bool) and interval >= 0
            ) or (isinstance(interval, list) and all(isinstance(i, int) and i >= 0 for i in interval))
            if not (isinstance(max_, int) and not isinstance(max_, bool) and max_ >= 0) or not ok_interval:
                bad("retry", f"must be {{max: N, interval: seconds or [seconds, ...]}}, got {dict(retry)!r}")
            else:
                options["retry"] = {"max": max_, "interval": interval}
        else:
            bad("retry", f"must be a count or {{max: N, interval: seconds}}, got {retry!r}")
    if data.get("jitter") is not None:
        seconds = _seconds(data["jitter"], "jitter", problems, zero_ok=True)
        if seconds is not None:
            options["jitter"] = seconds
    if data.get("misfire") is not None:
        try:
            options["misfire"] = MisfirePolicy(data["misfire"]).value
        except ValueError:
            bad("misfire", f"must be coalesce, skip or all, got {data['misfire']!r}")
    if data.get("misfire_grace") is not None:
        seconds = _seconds(data["misfire_grace"], "misfire_grace", problems)
        if seconds is not None:
            options["misfire_grace"] = seconds
    out["options"] = options
    return out, problems


def build_task(
    *,
    agent_name: str,
    trigger: Any = None,
    check_import: bool = True,
    source: str | None = None,
    **definition: Any,
) -> ScheduledTask:
    """A validated (unsaved) :class:`ScheduledTask` from keyword fields (see :data:`FIELDS`).

    ``trigger`` may replace ``type``/``schedule``/``timezone``: one of our triggers, or an APScheduler 3
    ``CronTrigger``/``IntervalTrigger``/``DateTrigger`` (converted; needs the ``apscheduler`` extra).
    Raises :class:`TaskDefinitionError` listing every problem.
    """
    if trigger is not None:
        from ._apscheduler import to_definition

        definition = {**definition, **to_definition(trigger)}
    values, problems = validate_definition(definition, check_import=check_import)
    if not agent_name or not isinstance(agent_name, str):
        problems.append(
            Problem(f"agent_name must be a non-empty string, got {agent_name!r}", field="agent_name")
        )
    if problems:
        task_name = definition.get("name") if isinstance(definition.get("name"), str) else None
        raise TaskDefinitionError([_with(p, task=task_name, file=source) for p in problems])
    return ScheduledTask(agent_name=agent_name, source=source, **values)


def _with(problem: Problem, **where: Any) -> Problem:
    fields = {k: v for k, v in where.items() if getattr(problem, k) is None and v is not None}
    return Problem(
        problem.message,
        file=fields.get("file", problem.file),
        line=fields.get("line", problem.line),
        task=fields.get("task", problem.task),
        field=fields.get("field", problem.field),
    )


def task_trigger(task: ScheduledTask) -> Trigger:
    """The trigger of a stored task (raises :class:`InvalidSchedule` if its row was edited into nonsense).

    An interval counts from ``start`` when given, else from the Unix epoch with ``align: epoch``, else from
    ``anchor_at`` (when its schedule was registered; ``None`` on rows older than the column: the epoch).
    """
    options = task.options or {}
    start = options.get("start")
    anchor = datetime.fromisoformat(start) if isinstance(start, str) else None
    if anchor is None and options.get("align") != "epoch":
        anchor = task.anchor_at
    return parse_schedule(task.type, task.schedule, task.timezone, start=anchor)


def anchored_at_registration(task: ScheduledTask) -> bool:
    """Whether ``task``'s ticks count from its registration (an interval without ``start`` or ``align``)."""
    options = task.options or {}
    return task.type == "interval" and not options.get("start") and options.get("align") != "epoch"


def grace_of(task: ScheduledTask) -> timedelta:
    """How late a tick may be and still count as on time."""
    return timedelta(seconds=float((task.options or {}).get("misfire_grace", DEFAULT_GRACE)))


def policy_of(task: ScheduledTask) -> MisfirePolicy:
    return MisfirePolicy((task.options or {}).get("misfire", MisfirePolicy.COALESCE.value))
