"""Validation of one task definition (from YAML, code or the API) into a :class:`ScheduledTask`.

Every problem is collected, none raised early, so a file reports all its errors at once. Each
:class:`~asyncsched.exceptions.Problem` names the field; the YAML loader adds file, line and task.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..exceptions import InvalidJob, InvalidSchedule, Problem, TaskDefinitionError
from ..queue._functions import check_function as _check_function
from ..queue._functions import parse_reference
from ..queue._retry import retry_from_data, retry_to_data
from ..store.models import ScheduledTask
from ._fields import DEFAULT_OVERLAP, FIELDS, LIMITS, NAME_RE, NAME_RULE, OVERLAPS
from ._triggers import Trigger, check_date, parse_interval, parse_schedule, parse_timezone

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

ALIGNMENTS = ("registration", "epoch")
"""Where an interval's ticks count from when no ``start`` is given."""


def check_function(path: str) -> str | None:
    """``None`` if ``"pkg.module:function"`` names a callable defined in that module, else what is wrong.

    The one rule of :func:`asyncsched.queue._functions.resolve_function` (no allow-list: task files and
    code are trusted configuration; the API applies its allow-list before this is reached).
    """
    return _check_function(path)


_TEXT_FIELDS = (
    "name",
    "description",
    "type",
    "schedule",
    "function",
    "queue",
    "timezone",
    "misfire",
    "overlap",
)


def _text_problem(value: str) -> str | None:
    """What makes ``value`` unstorable text (NUL, lone surrogates), or ``None``."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (a lone surrogate such as '\\ud800' is not)"
    return None


def _value_problem(value: Any, depth: int = 0) -> str | None:
    """What keeps ``value`` from being stored as JSON (type, NaN, depth, bad text), or ``None``."""
    if depth > LIMITS["depth"]:
        return f"is nested deeper than {LIMITS['depth']} levels"
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"must hold finite numbers, got {value!r}"
    if isinstance(value, str):
        return _text_problem(value)
    if isinstance(value, list | tuple):
        return next((p for p in (_value_problem(v, depth + 1) for v in value) if p), None)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"must have text keys, got {key!r}"
            problem = _text_problem(key) or _value_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"must hold JSON values (text, numbers, lists, mappings); got {type(value).__name__} {value!r:.60}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _seconds(
    value: Any, field: str, bad: _Bad, *, minimum: float = 0.0, zero_ok: bool = False
) -> float | None:
    """A duration field in seconds, within ``(0 or minimum, LIMITS[field]]``."""
    limit = LIMITS[field]
    number = _number(value)
    if isinstance(value, bool) or not (number is not None or isinstance(value, str)):
        bad(field, f"must be seconds or a duration like '30 seconds', got {value!r:.100}")
        return None
    if number is not None and zero_ok and number == 0:
        return 0.0
    try:
        seconds = parse_interval(value).total_seconds()
    except InvalidSchedule:
        bad(field, f"must be a positive duration like '30 seconds' up to {limit} seconds, got {value!r:.100}")
        return None
    if seconds > limit or seconds < minimum:
        bad(field, f"must be from {minimum:g} to {limit} seconds, got {value!r:.100}")
        return None
    return seconds


_Bad = Callable[[str, str], None]


def validate_definition(
    data: Mapping[str, Any], *, check_import: bool = True
) -> tuple[dict[str, Any], list[Problem]]:
    """Check one definition; returns the normalized column values and every problem found."""
    problems: list[Problem] = []

    def bad(field: str, message: str) -> None:
        problems.append(Problem(message, field=field))

    for key in data:
        if key not in FIELDS:
            bad(str(key)[:100], f"unknown key {str(key)[:100]!r}; allowed keys: {', '.join(FIELDS)}")
    unstorable = False
    for field in _TEXT_FIELDS:
        value = data.get(field)
        problem = _text_problem(value) if isinstance(value, str) else None
        if problem:
            bad(field, problem)
            unstorable = True
    if unstorable:
        return {}, problems
    out: dict[str, Any] = {}
    _check_identity(data, out, bad)
    options = _check_schedule(data, out, bad)
    _check_call(data, out, bad, check_import=check_import)
    _check_options(data, options, bad, check_import)
    out["options"] = options
    return out, problems


def _check_identity(data: Mapping[str, Any], out: dict[str, Any], bad: _Bad) -> None:
    name = data.get("name")
    if name is None:
        bad("name", "missing (every task needs a name)")
    elif not isinstance(name, str) or len(name) > LIMITS["name"] or not NAME_RE.match(name):
        bad("name", f"must be {NAME_RULE}, got {name!r:.100}")
    else:
        out["name"] = name
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        bad("description", f"must be text, got {type(description).__name__}")
    elif description is not None and len(description) > LIMITS["description"]:
        bad("description", f"must be at most {LIMITS['description']} characters, got {len(description)}")
    out["description"] = description
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        bad("enabled", f"must be true or false, got {enabled!r:.100}")
    out["enabled"] = enabled is not False
    queue = data.get("queue", "default")
    if not isinstance(queue, str) or len(queue) > LIMITS["name"] or not NAME_RE.match(queue):
        bad("queue", f"must be a queue name ({NAME_RULE}), got {queue!r:.100}")
    out["queue"] = queue if isinstance(queue, str) else "default"


def _check_start(data: Mapping[str, Any], bad: _Bad) -> datetime | None:
    start = data.get("start")
    if start is None:
        return None
    if isinstance(start, str):
        try:
            start = datetime.fromisoformat(start) if len(start) <= 64 else None
        except ValueError:
            start = None
        if start is None:
            bad("start", f"must be an ISO time such as '2026-01-01T00:00:00Z', got {data['start']!r:.100}")
            return None
    if not isinstance(start, datetime):
        bad("start", f"must be an ISO time, got {start!r:.100}")
        return None
    try:
        return check_date(start if start.tzinfo else start.replace(tzinfo=UTC), "start")
    except InvalidSchedule as exc:
        bad("start", exc.problems[0].message)
        return None


def _check_schedule(data: Mapping[str, Any], out: dict[str, Any], bad: _Bad) -> dict[str, Any]:
    """``type``, ``timezone``, ``start`` and ``schedule``; returns the options so far (``start``)."""
    options: dict[str, Any] = {}
    kind = data.get("type")
    if kind is None:
        bad("type", "missing; use interval, cron or date")
    elif kind not in ("interval", "cron", "date"):
        bad("type", f"must be interval, cron or date, got {kind!r:.100}")
    out["type"] = kind
    tz = data.get("timezone")
    if tz is not None and (not isinstance(tz, str) or not tz or len(tz) > LIMITS["timezone"]):
        bad("timezone", f"must be an IANA name such as 'Europe/Berlin', got {tz!r:.100}")
        tz = None
    elif tz is not None:
        try:
            parse_timezone(tz)
        except InvalidSchedule as exc:
            bad("timezone", exc.problems[0].message)
            tz = None
    out["timezone"] = tz or "UTC"
    had_start = data.get("start") is not None
    start = _check_start(data, bad)
    if start is not None:
        options["start"] = start.isoformat()
    _check_align(data.get("align"), kind, had_start, options, bad)
    schedule = data.get("schedule")
    if schedule is None:
        bad("schedule", "missing; e.g. '5 minutes' (interval) or '0 9 * * *' (cron)")
        return options
    if kind not in ("interval", "cron", "date") or (had_start and start is None):
        return options
    if isinstance(schedule, datetime) and kind == "date":
        schedule = schedule.isoformat()
    if _number(schedule) is not None and kind == "interval":
        schedule = f"{schedule} seconds"
    if not isinstance(schedule, str):
        bad("schedule", f"must be a string, got {type(schedule).__name__} {schedule!r:.100}")
    elif len(schedule) > LIMITS["schedule"]:
        bad("schedule", f"must be at most {LIMITS['schedule']} characters")
    else:
        try:
            parse_schedule(kind, schedule, tz, start=start)
            out["schedule"] = schedule.strip()
        except InvalidSchedule as exc:
            for problem in exc.problems:
                bad(problem.field or "schedule", problem.message)
    return options


def _check_align(align: Any, kind: Any, had_start: bool, options: dict[str, Any], bad: _Bad) -> None:
    """``align``: where interval ticks count from (``registration``, the default, is not stored)."""
    if align is None:
        return
    if align not in ALIGNMENTS:
        bad("align", f"must be 'registration' or 'epoch', got {align!r:.100}")
    elif kind != "interval":
        bad("align", f"applies to interval tasks only (this one is {kind!r:.100}); remove it")
    elif had_start and align == "epoch":
        bad("align", "'epoch' and 'start' both set the anchor of the ticks; keep one")
    elif align == "epoch":
        options["align"] = "epoch"


def _check_call(data: Mapping[str, Any], out: dict[str, Any], bad: _Bad, *, check_import: bool) -> None:
    """``function``, ``args`` and ``kwargs``."""
    function = data.get("function")
    if function is None:
        bad("function", "missing; e.g. 'app.services.email:process_pending_emails_task'")
    else:
        try:
            parse_reference(function)
        except InvalidJob as exc:
            bad("function", str(exc))
        else:
            error = check_function(function) if check_import else None
            if error:
                bad("function", error)
            out["function"] = function
    args = data.get("args", [])
    args = [] if args is None else args
    if not isinstance(args, list | tuple):
        bad("args", f"must be a list, got {type(args).__name__}")
        args = []
    elif len(args) > LIMITS["args"]:
        bad("args", f"must have at most {LIMITS['args']} items, got {len(args)}")
        args = []
    elif problem := _value_problem(list(args)):
        bad("args", problem)
        args = []
    out["args"] = list(args)
    kwargs = data.get("kwargs", {})
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        bad("kwargs", "must be a mapping of names to values")
        kwargs = {}
    elif len(kwargs) > LIMITS["kwargs"]:
        bad("kwargs", f"must have at most {LIMITS['kwargs']} keys, got {len(kwargs)}")
    elif problem := _value_problem(dict(kwargs)):
        bad("kwargs", problem)
    elif len(json.dumps([out["args"], dict(kwargs)])) > LIMITS["value_bytes"]:
        bad("kwargs", f"args and kwargs together must be at most {LIMITS['value_bytes']} bytes of JSON")
    out["kwargs"] = dict(kwargs)


def _check_retry(retry: Any, bad: _Bad, check_import: bool = True) -> dict[str, Any] | None:
    limit, most = LIMITS["retry"], LIMITS["retry_interval"]

    def count_ok(n: Any) -> bool:
        return isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= limit

    def seconds_ok(n: Any) -> bool:
        return isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= most

    if count_ok(retry):
        return {"max": retry, "interval": 0}
    if isinstance(retry, Mapping) and set(retry) - {"max", "interval"}:  # backoff, jitter, on (issue 17)
        try:
            return retry_to_data(retry_from_data(retry, check_import=check_import))
        except ValueError as exc:
            bad("retry", str(exc))
            return None
    if isinstance(retry, Mapping) and set(retry) <= {"max", "interval"}:
        max_, interval = retry.get("max"), retry.get("interval", 0)
        ok_interval = seconds_ok(interval) or (
            isinstance(interval, list)
            and len(interval) <= LIMITS["retry_intervals"]
            and all(map(seconds_ok, interval))
        )
        if count_ok(max_) and ok_interval:
            return {"max": max_, "interval": interval}
    bad(
        "retry",
        f"must be a count from 0 to {limit} or {{max: N, interval: seconds or [seconds, ...]}} with "
        f"intervals from 0 to {most} seconds, got {retry!r:.100}",
    )
    return None


def _check_options(
    data: Mapping[str, Any], options: dict[str, Any], bad: _Bad, check_import: bool = True
) -> None:
    """``timeout``, ``retry``, ``jitter``, ``misfire`` and ``misfire_grace`` into ``options``."""
    if data.get("timeout") is not None:
        seconds = _seconds(data["timeout"], "timeout", bad, minimum=1)
        if seconds is not None:
            options["timeout"] = int(seconds) if seconds == int(seconds) else seconds
    if data.get("retry") is not None:
        retry = _check_retry(data["retry"], bad, check_import)
        if retry is not None:
            options["retry"] = retry
    if data.get("jitter") is not None:
        seconds = _seconds(data["jitter"], "jitter", bad, zero_ok=True)
        if seconds is not None:
            options["jitter"] = seconds
    if data.get("misfire") is not None:
        try:
            options["misfire"] = MisfirePolicy(data["misfire"]).value
        except ValueError:
            bad("misfire", f"must be coalesce, skip or all, got {data['misfire']!r:.100}")
    if data.get("misfire_grace") is not None:
        seconds = _seconds(data["misfire_grace"], "misfire_grace", bad, zero_ok=True)
        if seconds is not None:
            options["misfire_grace"] = seconds
    overlap = data.get("overlap")
    if overlap is not None and overlap not in OVERLAPS:
        bad("overlap", f"must be skip, queue or allow, got {overlap!r:.100}")
    elif overlap is not None and overlap != DEFAULT_OVERLAP:  # the default is not stored
        options["overlap"] = overlap
    if data.get("limit") is not None:
        limit = _check_limit(data["limit"], bad)
        if limit is not None:
            options["limit"] = limit


def _check_limit(value: Any, bad: _Bad) -> dict[str, Any] | None:
    """A task's flow limit (``limit: {rate, max_concurrency, concurrency_key}``), checked as enqueue will."""
    from ..queue._limits import Limit

    if not isinstance(value, Mapping) or not set(value) <= {"rate", "max_concurrency", "concurrency_key"}:
        bad("limit", f"must be a mapping of rate, max_concurrency and concurrency_key, got {value!r:.100}")
        return None
    try:
        Limit(value.get("rate"), value.get("max_concurrency"), value.get("concurrency_key"))
    except ValueError as exc:
        bad("limit", str(exc))
        return None
    return {k: v for k, v in value.items() if v is not None}


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


def overlap_of(task: ScheduledTask) -> str:
    """``skip``, ``queue`` or ``allow``: what a tick does while the previous run is still under way."""
    overlap = (task.options or {}).get("overlap", DEFAULT_OVERLAP)
    return overlap if overlap in OVERLAPS else DEFAULT_OVERLAP


def policy_of(task: ScheduledTask) -> MisfirePolicy:
    return MisfirePolicy((task.options or {}).get("misfire", MisfirePolicy.COALESCE.value))
