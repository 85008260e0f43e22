"""The one definition of a scheduled task: a declarative table of its fields, and what is derived from it.

Each :class:`Field` states the JSON types a field takes, whether it is required, its pattern, enum, length
and number bounds, its documentation and its *rule* (the text of every message about it). From the table:

* :func:`task_schema` -- the API's ``TaskCreate`` JSON schema (so the OpenAPI document), each property
  carrying ``x-rule`` and, when required, ``x-missing``: :mod:`asyncsched.web._validation` words every
  refusal of that property with them;
* :func:`field_problem` -- the same constraints checked in Python by
  :func:`asyncsched.scheduler._definition.validate_definition` (``tasks.yaml``, code, and the API after its
  schema), worded by the same :func:`rule_message`.

So a value outside the table is refused with the same message by a task file (with file, line and field)
and by the API (422 whose ``loc`` ends in the field). What the table cannot say (a schedule that does not
parse, a time zone that does not exist, a function that does not resolve) is checked by
``_definition`` alone, and the API reaches those checks through the scheduler.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._boundary import text_problem as _unicode_problem
from ..queue._functions import FUNCTION_PATTERN, MAX_REFERENCE
from ._triggers import EARLIEST, LATEST, MAX_INTERVAL

__all__ = [
    "DEFAULT_OVERLAP",
    "FIELDS",
    "LIMITS",
    "NAME_PATTERN",
    "NAME_RE",
    "OVERLAPS",
    "TABLE",
    "Field",
    "field_problem",
    "function_schema",
    "json_fits",
    "limit_schema",
    "name_schema",
    "rule_message",
    "task_schema",
    "text_problem",
    "value_problem",
]

_FIRST, _REST = "A-Za-z0-9_", "A-Za-z0-9_.-"
NAME_PATTERN = f"^[{_FIRST}][{_REST}]*$"
"""Task, agent and queue names as a JSON Schema (ECMA) pattern (``$`` is the end of the text)."""
NAME_RE = re.compile(f"\\A[{_FIRST}][{_REST}]*\\Z")
"""The same rule for Python (``\\Z``: a trailing newline does not pass)."""
NAME_RULE = "1-200 letters, digits, '_', '.' or '-', not starting with '.' or '-'"

OVERLAPS = ("skip", "queue", "allow")
"""``overlap`` policies: what a tick does while the task's previous run is still queued or running."""
DEFAULT_OVERLAP = "skip"
"""As APScheduler's ``max_instances=1`` and arq's unique cron jobs: a periodic job never piles up."""

DAY = 86_400
LIMITS: dict[str, int] = {
    "name": 200,
    "description": 2000,
    "schedule": 200,
    "timezone": 64,
    "duration_text": 100,
    "args": 100,
    "kwargs": 100,
    "depth": 32,
    "value_bytes": 64 * 1024,
    "retry": 100,
    "retry_intervals": 100,
    "timeout": 7 * DAY,
    "retry_interval": 7 * DAY,
    "jitter": 7 * DAY,
    "misfire_grace": 7 * DAY,
    "interval": int(MAX_INTERVAL.total_seconds()),
}
"""Every bound: characters for text, items/keys for args/kwargs, levels for nesting, bytes for the JSON
of args plus kwargs, retries, and seconds for durations."""


@dataclass(frozen=True)
class Field:
    """One key of a task definition: what it takes (JSON Schema terms), its documentation and its rule."""

    name: str
    types: tuple[str, ...]
    """JSON types: ``string``, ``integer``, ``number``, ``boolean``, ``array``, ``object``, ``null``."""
    doc: str
    rule: str
    """What a good value is: every refusal reads ``must be <rule>, got <value>``."""
    required: bool = False
    missing: str | None = None
    """The message when a required field is absent."""
    default: Any = None
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    min_length: int | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_items: int | None = None
    max_properties: int | None = None
    format: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Further JSON Schema keywords for the published schema (nested properties), checked in Python by
    ``_definition``."""

    def schema(self) -> dict[str, Any]:
        """This field's JSON schema (a property of ``TaskCreate``)."""
        out: dict[str, Any] = {"type": self.types[0] if len(self.types) == 1 else list(self.types)}
        keywords = {
            "enum": list(self.enum) if self.enum else None,
            "minLength": self.min_length,
            "maxLength": self.max_length,
            "pattern": self.pattern,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "maxItems": self.max_items,
            "maxProperties": self.max_properties,
            "format": self.format,
            "default": self.default,
        }
        out.update({k: v for k, v in keywords.items() if v is not None})
        out.update(self.extra)
        out["description"] = self.doc
        out["x-rule"] = self.rule
        if self.missing:
            out["x-missing"] = self.missing
        return out


def _duration(name: str, minimum: int, example: str, what: str) -> Field:
    limit = LIMITS[name]
    rule = f"seconds from {minimum} to {limit} or a duration like {example!r} (at most {limit // DAY} days)"
    return Field(
        name,
        ("number", "string", "null"),
        doc=f"{what}: {rule}",
        rule=rule,
        minimum=minimum,
        maximum=limit,
        max_length=LIMITS["duration_text"],
    )


_RETRY_RULE = (
    f"a count from 0 to {LIMITS['retry']} or {{max: N, interval: seconds or [seconds, ...]}} with intervals "
    f"from 0 to {LIMITS['retry_interval']} seconds, or {{max: N, backoff: exponential, base: s, cap: s, "
    "jitter: true}; 'on: [ExceptionClass, ...]' retries only those"
)
_LIMIT_PROPERTIES = {
    "rate": {"type": ["string", "null"], "minLength": 3, "maxLength": 220},
    "max_concurrency": {"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000},
    "concurrency_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 200},
}

TABLE: tuple[Field, ...] = (
    Field("name", ("string",), f"a unique name within the agent ({NAME_RULE})", NAME_RULE, required=True,
          missing="missing (every task needs a name)", min_length=1, max_length=LIMITS["name"],
          pattern=NAME_PATTERN),
    Field("description", ("string", "null"), f"free text (at most {LIMITS['description']} characters)",
          f"text of at most {LIMITS['description']} characters", max_length=LIMITS["description"]),
    Field("enabled", ("boolean",), "true or false (default true)", "true or false", default=True),
    Field("type", ("string",), "interval, cron or date", "interval, cron or date", required=True,
          missing="missing; use interval, cron or date", enum=("interval", "cron", "date")),
    Field("schedule", ("string",), "'5 minutes' (interval), '0 9 * * *' (cron) or an ISO time (date)",
          f"a schedule of 1-{LIMITS['schedule']} characters: '5 minutes' (interval), '0 9 * * *' (cron) or "
          "an ISO time (date)", required=True, min_length=1, max_length=LIMITS["schedule"],
          missing="missing; e.g. '5 minutes' (interval) or '0 9 * * *' (cron)"),
    Field("function", ("string",), "'package.module:function', defined in that module",
          "an import path 'package.module:function'", required=True, min_length=3, max_length=MAX_REFERENCE,
          pattern=FUNCTION_PATTERN, missing="missing; e.g. 'app.services.email:process_pending_emails_task'"),
    Field("args", ("array",), f"a list of JSON values (at most {LIMITS['args']} items)",
          f"a list of at most {LIMITS['args']} JSON values", max_items=LIMITS["args"]),
    Field("kwargs", ("object",), f"a mapping of names to JSON values (at most {LIMITS['kwargs']} keys)",
          f"a mapping of at most {LIMITS['kwargs']} names to JSON values", max_properties=LIMITS["kwargs"]),
    Field("queue", ("string",), "the queue to enqueue into (default 'default')",
          f"a queue name ({NAME_RULE})", default="default", min_length=1, max_length=LIMITS["name"],
          pattern=NAME_PATTERN),
    Field("timezone", ("string",), "an IANA time zone (default UTC)", "an IANA name such as 'Europe/Berlin'",
          default="UTC", min_length=1, max_length=LIMITS["timezone"]),
    _duration("timeout", 1, "5 minutes", "job timeout"),
    Field("retry", ("integer", "object", "null"), "retries: " + _RETRY_RULE, _RETRY_RULE,
          minimum=0, maximum=LIMITS["retry"], max_properties=7),
    _duration("jitter", 0, "30 seconds", "random delay up to this"),
    Field("misfire", ("string",), "coalesce (default), skip or all", "coalesce, skip or all",
          enum=("coalesce", "skip", "all")),
    _duration("misfire_grace", 0, "1 minute", "how late a tick may be and still run"),
    Field("start", ("string",), f"interval anchor: an ISO time from {EARLIEST:%Y-%m-%d} to before "
          f"{LATEST:%Y-%m-%d} (default: when the task is registered)",
          "an ISO time such as '2026-01-01T00:00:00Z'", format="date-time"),
    Field("overlap", ("string",), "a tick while the task's previous run is still queued or running: 'skip' "
          "(default: the tick does not run and is recorded as skipped), 'queue' (it runs once that run "
          "ends; at most one waits) or 'allow' (it runs alongside)", "skip, queue or allow",
          enum=OVERLAPS, default=DEFAULT_OVERLAP),
    Field("align", ("string",), "interval ticks: 'registration' (default: every interval from registration "
          "or start) or 'epoch' (multiples of the interval since 1970-01-01 UTC: '5 minutes' at :00, :05...)",
          "'registration' or 'epoch'", enum=("registration", "epoch")),
    Field("limit", ("object", "null"), "flow limit of its runs: {rate: '60/m' or 'key:60/m', "
          "max_concurrency: N, concurrency_key: 'tenant:{tenant_id}'} (docs/flow-control.md)",
          "a mapping of rate, max_concurrency and concurrency_key",
          extra={"additionalProperties": False, "properties": _LIMIT_PROPERTIES}),
)  # fmt: skip
BY_NAME: dict[str, Field] = {f.name: f for f in TABLE}
FIELDS: dict[str, str] = {f.name: f.doc for f in TABLE}
"""Every key a task definition accepts, with what it takes (used in error messages and the schema)."""
REQUIRED = tuple(f.name for f in TABLE if f.required)


def rule_message(rule: str, value: object) -> str:
    """The one wording of a refused value, used by the YAML loader and the API alike."""
    return f"must be {rule}, got {value!r:.100}"


def _end_anchored(pattern: str) -> re.Pattern[str]:
    """An ECMA pattern of this table (``^...$``) for Python, where ``$`` must be ``\\Z``."""
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)


_PATTERNS = {f.name: _end_anchored(f.pattern) for f in TABLE if f.pattern}
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (Mapping,),
    "null": (type(None),),
}
_ACCEPTS = {f.name: tuple(t for name in f.types for t in _PY_TYPES[name]) for f in TABLE}
"""Each field's JSON types as Python classes (code may pass a tuple for a list, any mapping for an object)."""


def _type_ok(value: Any, f: Field) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, never a number to JSON
        return "boolean" in f.types
    return isinstance(value, _ACCEPTS[f.name])


def field_problem(f: Field, value: object) -> str | None:
    """What keeps ``value`` out of field ``f`` by the table (type, enum, length, pattern, bounds), worded
    by :func:`rule_message`; ``None`` when the table accepts it."""
    if not _type_ok(value, f):
        return rule_message(f.rule, value)
    bad = False
    if isinstance(value, str):
        n = len(value)
        bad = (
            (f.enum is not None and value not in f.enum)
            or (f.min_length is not None and n < f.min_length)
            or (f.max_length is not None and n > f.max_length)
            or (f.name in _PATTERNS and _PATTERNS[f.name].search(value) is None)
        )
    elif isinstance(value, int | float) and not isinstance(value, bool):
        bad = (
            (isinstance(value, float) and not math.isfinite(value))
            or (f.minimum is not None and value < f.minimum)
            or (f.maximum is not None and value > f.maximum)
        )
    elif isinstance(value, list | tuple):
        bad = f.max_items is not None and len(value) > f.max_items
    elif isinstance(value, Mapping):
        bad = f.max_properties is not None and len(value) > f.max_properties
    return rule_message(f.rule, value) if bad else None


def text_problem(value: str) -> str | None:
    """What makes ``value`` unstorable text (NUL, lone surrogates), or ``None``."""
    if "\x00" in value:
        return "must not contain NUL characters"
    return None if value.isascii() else _unicode_problem(value)


def value_problem(value: object, depth: int = 0) -> str | None:
    """What keeps ``value`` from being stored as JSON (type, NaN, depth, bad text), or ``None``."""
    if depth > LIMITS["depth"]:
        return f"is nested deeper than {LIMITS['depth']} levels"
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"must hold finite numbers, got {value!r}"
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, list | tuple):
        for item in value:
            if not (item is None or type(item) is int) and (problem := value_problem(item, depth + 1)):
                return problem
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"must have text keys, got {key!r}"
            problem = text_problem(key) or value_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"must hold JSON values (text, numbers, lists, mappings); got {type(value).__name__} {value!r:.60}"


def json_fits(args: list[Any], kwargs: Mapping[str, Any]) -> bool:
    """Whether the JSON of ``args`` and ``kwargs`` surely fits the bound, without writing it (flat values:
    at most 6 bytes a character, 32 a number); nested values say no, and the JSON is then measured."""
    size = sum(6 * len(k) + 4 for k in kwargs)
    for v in (*args, *kwargs.values()):
        if isinstance(v, str):
            size += 6 * len(v) + 4
        elif v is None or isinstance(v, float) or (isinstance(v, int) and -(2**63) <= v < 2**63):
            size += 32
        else:
            return False
    return size <= LIMITS["value_bytes"]


def name_schema() -> dict[str, Any]:
    """JSON schema of a task, agent or queue name."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": LIMITS["name"],
        "pattern": NAME_PATTERN,
        "x-rule": NAME_RULE,
    }


def function_schema() -> dict[str, Any]:
    """JSON schema of a function reference (the text rule; resolving it is a second step)."""
    schema = BY_NAME["function"].schema()
    schema.pop("x-missing")
    return {
        **schema,
        "description": "Import path of a function defined in that module, `package.module:function`.",
    }


def limit_schema() -> dict[str, Any]:
    """JSON schema of a flow limit (a task's ``limit``, ``POST /jobs``' ``limit``); the text rules are
    checked by :mod:`asyncsched.queue._limits`."""
    return BY_NAME["limit"].schema()


def task_schema() -> dict[str, Any]:
    """The API's ``TaskCreate`` body schema: one property per :data:`TABLE` field, plus ``agent_name``."""
    props: dict[str, Any] = {f.name: f.schema() for f in TABLE}
    props["agent_name"] = {**name_schema(), "description": "Owner agent; defaults to the server's agent."}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(REQUIRED),
        "properties": props,
    }
