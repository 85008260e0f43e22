"""Validation of one task definition (from YAML, code or the API) into a :class:`ScheduledTask`.

The field table of :mod:`._fields` is checked first (types, enums, lengths, patterns, bounds: the same
constraints, and the same messages, as the API's JSON schema); then what a table cannot say: schedules
parse, time zones exist, the function resolves by the one rule of :mod:`asyncsched.queue._functions`.

Every problem is collected (a file reports all its errors at once), each naming its field. Cheap per item
for 100,000 definitions at once (``add_tasks``): patterns compiled once, a function reference resolved once
per distinct path, a schedule parsed once per distinct (type, schedule, zone, start), and
:func:`build_task` fills its :class:`ScheduledTask` without the ORM's per-attribute events.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import configure_mappers, instrumentation

from ..exceptions import InvalidJob, InvalidSchedule, Problem, TaskDefinitionError
from ..queue._functions import check_function as _check_function
from ..queue._functions import parse_reference
from ..queue._retry import retry_from_data, retry_to_data
from ..store.models import ScheduledTask
from ._fields import (
    BY_NAME,
    DEFAULT_OVERLAP,
    FIELDS,
    LIMITS,
    OVERLAPS,
    REQUIRED,
    field_problem,
    json_fits,
    rule_message,
)
from ._fields import text_problem as _text_problem
from ._fields import value_problem as _value_problem
from ._misfire import MisfirePolicy, policy_of
from ._triggers import Trigger, check_date, parse_interval, parse_schedule, parse_timezone

__all__ = [
    "ALIGNMENTS",
    "FIELDS",
    "MisfirePolicy",
    "anchored_at_registration",
    "build_task",
    "check_function",
    "new_task",
    "overlap_of",
    "policy_of",
    "task_trigger",
    "validate_definition",
]


ALIGNMENTS = ("registration", "epoch")
"""Where an interval's ticks count from when no ``start`` is given."""

_resolved: set[str] = set()
"""References that resolved (one import and walk per distinct path, however many tasks name it)."""


def check_function(path: str) -> str | None:
    """``None`` if ``"pkg.module:function"`` names a callable defined in that module, else what is wrong.

    The one rule of :func:`asyncsched.queue._functions.resolve_function` (no allow-list: task files and
    code are trusted configuration; the API applies its allow-list before this is reached).
    """
    if path in _resolved:
        return None
    error = _check_function(path)
    if error is None:
        if len(_resolved) >= 4096:
            _resolved.clear()
        _resolved.add(path)
    return error


@lru_cache(maxsize=4096)
def _trigger(kind: str, schedule: str, tz: str | None, start: datetime | None) -> Trigger:
    """:func:`parse_schedule`, once per distinct schedule (triggers are immutable once built)."""
    return parse_schedule(kind, schedule, tz, start=start)


@lru_cache(maxsize=1024)
def _zone_problem(tz: str) -> str | None:
    try:
        parse_timezone(tz)
    except InvalidSchedule as exc:
        return exc.problems[0].message
    return None


_Bad = Callable[[str, str], None]


def _native(data: Mapping[str, Any]) -> dict[str, Any]:
    """The given fields, with YAML's own values in the table's types: a timestamp is an ISO text, an
    interval ``schedule`` given as a number is seconds."""
    given = {k: v for k, v in data.items() if v is not None}
    if isinstance(given.get("start"), datetime):
        given["start"] = given["start"].isoformat()
    schedule, kind = given.get("schedule"), given.get("type")
    if isinstance(schedule, datetime) and kind == "date":
        given["schedule"] = schedule.isoformat()
    elif isinstance(schedule, int | float) and not isinstance(schedule, bool) and kind == "interval":
        given["schedule"] = f"{schedule} seconds"
    return given


def validate_definition(
    data: Mapping[str, Any], *, check_import: bool = True
) -> tuple[dict[str, Any], list[Problem]]:
    """Check one definition; returns the normalized column values and every problem found."""
    problems: list[Problem] = []

    def bad(field: str, message: str) -> None:
        problems.append(Problem(message, field=field))

    for key in data.keys() - BY_NAME.keys():
        bad(str(key)[:100], f"unknown key {str(key)[:100]!r}; allowed keys: {', '.join(FIELDS)}")
    given = _native(data)
    ok: dict[str, Any] = {}
    unstorable = False
    for key, value in given.items():
        f = BY_NAME.get(key)
        if f is None:
            continue
        problem = _text_problem(value) if isinstance(value, str) else None
        unstorable = unstorable or problem is not None
        problem = problem or field_problem(f, value)
        if problem:
            bad(key, problem)
        else:
            ok[key] = value
    if unstorable:  # text that cannot be stored: nothing more is said about the definition
        return {}, problems
    for name in REQUIRED:
        if name not in given:
            bad(name, BY_NAME[name].missing or "missing")
    out: dict[str, Any] = {
        "name": ok.get("name"),
        "description": ok.get("description"),
        "enabled": ok.get("enabled", True),
        "queue": ok.get("queue", "default"),
        "type": ok.get("type", given.get("type")),
    }
    options = _check_schedule(ok, given, out, bad)
    _check_call(ok, out, bad, check_import=check_import)
    _check_options(ok, options, bad, check_import)
    out["options"] = options
    return out, problems


@lru_cache(maxsize=4096)
def _start(text: str) -> tuple[datetime | None, str | None]:
    """``start`` as an aware time, or what is wrong with it (once per distinct text)."""
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        return None, rule_message(BY_NAME["start"].rule, text)
    try:
        return check_date(start if start.tzinfo else start.replace(tzinfo=UTC), "start"), None
    except InvalidSchedule as exc:
        return None, exc.problems[0].message


def _check_schedule(
    ok: Mapping[str, Any], given: Mapping[str, Any], out: dict[str, Any], bad: _Bad
) -> dict[str, Any]:
    """``timezone``, ``start``, ``align`` and ``schedule``; returns the options so far (``start``)."""
    options: dict[str, Any] = {}
    kind = ok.get("type")
    tz = ok.get("timezone")
    if tz is not None and (zone_problem := _zone_problem(tz)):
        bad("timezone", zone_problem)
        tz = None
    out["timezone"] = tz or "UTC"
    start, start_problem = _start(ok["start"]) if "start" in ok else (None, None)
    if start_problem:
        bad("start", start_problem)
    if start is not None:
        options["start"] = start.isoformat()
    had_start = given.get("start") is not None
    _check_align(ok.get("align"), kind, had_start, options, bad)
    schedule = ok.get("schedule")
    if schedule is None or kind is None or (had_start and start is None):
        return options
    try:
        _trigger(kind, schedule, tz, start)
        out["schedule"] = schedule.strip()
    except InvalidSchedule as exc:
        for problem in exc.problems:
            bad(problem.field or "schedule", problem.message)
    return options


def _check_align(align: Any, kind: Any, had_start: bool, options: dict[str, Any], bad: _Bad) -> None:
    """``align``: where interval ticks count from (``registration``, the default, is not stored)."""
    if align is None:
        return
    if kind != "interval":
        bad("align", f"applies to interval tasks only (this one is {kind!r:.100}); remove it")
    elif had_start and align == "epoch":
        bad("align", "'epoch' and 'start' both set the anchor of the ticks; keep one")
    elif align == "epoch":
        options["align"] = "epoch"


def _check_call(ok: Mapping[str, Any], out: dict[str, Any], bad: _Bad, *, check_import: bool) -> None:
    """``function`` (the one rule), ``args`` and ``kwargs`` (storable JSON, bounded)."""
    function = ok.get("function")
    if function is not None and check_import and function in _resolved:
        out["function"] = function  # resolved before by the same rule
    elif function is not None:
        try:
            parse_reference(function)
        except InvalidJob as exc:
            bad("function", str(exc))
        else:
            error = check_function(function) if check_import else None
            if error:
                bad("function", error)
            out["function"] = function
    args = list(ok.get("args", ()))
    if problem := _value_problem(args):
        bad("args", problem)
        args = []
    out["args"] = args
    kwargs = ok.get("kwargs", {})
    if not all(isinstance(k, str) for k in kwargs):
        bad("kwargs", rule_message(BY_NAME["kwargs"].rule, kwargs))
        kwargs = {}
    elif problem := _value_problem(kwargs):
        bad("kwargs", problem)
    elif not json_fits(args, kwargs) and len(json.dumps([args, dict(kwargs)])) > LIMITS["value_bytes"]:
        bad("kwargs", f"args and kwargs together must be at most {LIMITS['value_bytes']} bytes of JSON")
    out["kwargs"] = dict(kwargs)


def _seconds(value: float | str, field: str, bad: _Bad) -> float | None:
    """A duration field in seconds: a number (bounded by the table) or a text like ``'30 seconds'``."""
    if not isinstance(value, str):
        return float(value)
    f = BY_NAME[field]
    try:
        seconds = parse_interval(value).total_seconds()
    except InvalidSchedule:
        seconds = -1.0
    if not (f.minimum or 0) <= seconds <= (f.maximum or 0):
        bad(field, rule_message(f.rule, value))
        return None
    return seconds


def _check_retry(retry: Any, bad: _Bad, check_import: bool = True) -> dict[str, Any] | None:
    """A count (bounded by the table), ``{max, interval}``, or a backoff policy (``queue._retry``)."""
    most = LIMITS["retry_interval"]

    def seconds_ok(n: Any) -> bool:
        return isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= most

    if isinstance(retry, int):
        return {"max": retry, "interval": 0}
    if set(retry) - {"max", "interval"}:  # backoff, jitter, on (issue 17)
        try:
            return retry_to_data(retry_from_data(retry, check_import=check_import))
        except ValueError as exc:
            bad("retry", str(exc))
            return None
    max_, interval = retry.get("max"), retry.get("interval", 0)
    ok_interval = seconds_ok(interval) or (
        isinstance(interval, list)
        and len(interval) <= LIMITS["retry_intervals"]
        and all(map(seconds_ok, interval))
    )
    if isinstance(max_, int) and not isinstance(max_, bool) and 0 <= max_ <= LIMITS["retry"] and ok_interval:
        return {"max": max_, "interval": interval}
    bad("retry", rule_message(BY_NAME["retry"].rule, retry))
    return None


def _check_options(ok: Mapping[str, Any], options: dict[str, Any], bad: _Bad, check_import: bool) -> None:
    """``timeout``, ``retry``, ``jitter``, ``misfire``, ``misfire_grace``, ``overlap`` and ``limit``."""
    if "timeout" in ok and (seconds := _seconds(ok["timeout"], "timeout", bad)) is not None:
        options["timeout"] = int(seconds) if seconds == int(seconds) else seconds
    if "retry" in ok and (retry := _check_retry(ok["retry"], bad, check_import)) is not None:
        options["retry"] = retry
    for field in ("jitter", "misfire_grace"):
        if field in ok and (seconds := _seconds(ok[field], field, bad)) is not None:
            options[field] = seconds
    if "misfire" in ok:
        options["misfire"] = ok["misfire"]
    if ok.get("overlap", DEFAULT_OVERLAP) != DEFAULT_OVERLAP:  # the default is not stored
        options["overlap"] = ok["overlap"]
    if "limit" in ok and (limit := _check_limit(ok["limit"], bad)) is not None:
        options["limit"] = limit


def _check_limit(value: Mapping[str, Any], bad: _Bad) -> dict[str, Any] | None:
    """A task's flow limit (``limit: {rate, max_concurrency, concurrency_key}``), checked as enqueue will."""
    from ..queue._limits import Limit

    if not set(value) <= {"rate", "max_concurrency", "concurrency_key"}:
        bad("limit", rule_message(BY_NAME["limit"].rule, value))
        return None
    try:
        Limit(value.get("rate"), value.get("max_concurrency"), value.get("concurrency_key"))
    except ValueError as exc:
        bad("limit", str(exc))
        return None
    return {k: v for k, v in value.items() if v is not None}


_MANAGER = instrumentation.manager_of_class(ScheduledTask)
_configured: list[bool] = []


def new_task(values: Mapping[str, Any]) -> ScheduledTask:
    """A new (transient) :class:`ScheduledTask` holding ``values`` (column -> value), filled directly:
    the ORM's constructor fires an event per attribute, which costs more than validating the task.
    Adding it to a session inserts these values, as for a task built by ``ScheduledTask(**values)``."""
    if not _configured:  # what the ORM's constructor would do first (once)
        configure_mappers()
        _configured.append(True)
    task: ScheduledTask = _MANAGER.new_instance()
    task.__dict__.update(values)
    return task


def build_task(
    *,
    agent_name: str,
    trigger: object = None,
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
    return new_task({"agent_name": agent_name, "source": source, **values})


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


def overlap_of(task: ScheduledTask) -> str:
    """``skip``, ``queue`` or ``allow``: what a tick does while the previous run is still under way."""
    overlap = (task.options or {}).get("overlap", DEFAULT_OVERLAP)
    return overlap if overlap in OVERLAPS else DEFAULT_OVERLAP
