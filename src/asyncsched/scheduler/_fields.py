"""The one definition of a scheduled task's fields: what each takes, its limits and patterns.

Both entries read it: :func:`asyncsched.scheduler._definition.validate_definition` (``tasks.yaml``, code,
and the API after its schema check) enforces these limits, and the API's ``TaskCreate`` JSON schema is
:func:`task_schema`, built from the same constants. No other copy of a task rule exists.
"""

from __future__ import annotations

import re
from typing import Any

from ..queue._functions import FUNCTION_PATTERN, MAX_REFERENCE
from ._triggers import EARLIEST, LATEST, MAX_INTERVAL

__all__ = [
    "DEFAULT_OVERLAP",
    "FIELDS",
    "LIMITS",
    "NAME_PATTERN",
    "NAME_RE",
    "OVERLAPS",
    "function_schema",
    "limit_schema",
    "name_schema",
    "task_schema",
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

FIELDS: dict[str, str] = {
    "name": f"a unique name within the agent ({NAME_RULE})",
    "description": f"free text (at most {LIMITS['description']} characters)",
    "enabled": "true or false (default true)",
    "type": "interval, cron or date",
    "schedule": "'5 minutes', '0 9 * * *' or an ISO time",
    "function": "'package.module:function', defined in that module",
    "args": f"a list of JSON values (at most {LIMITS['args']} items)",
    "kwargs": f"a mapping of names to JSON values (at most {LIMITS['kwargs']} keys)",
    "queue": "the queue to enqueue into (default 'default')",
    "timezone": "an IANA time zone (default UTC)",
    "timeout": f"job timeout: seconds or '5 minutes' (at most {LIMITS['timeout'] // DAY} days)",
    "retry": f"retries: a count up to {LIMITS['retry']}, {{max: N, interval: seconds or [seconds, ...]}}, or "
    "{max: N, backoff: exponential, base: s, cap: s, jitter: true}; "
    "'on: [ExceptionClass, ...]' retries only those",
    "jitter": f"random delay up to this: seconds or '30 seconds' (at most {LIMITS['jitter'] // DAY} days)",
    "misfire": "coalesce (default), skip or all",
    "misfire_grace": "seconds a tick may be late and still run: seconds or '1 minute'",
    "start": f"interval anchor: an ISO time from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d} "
    "(default: when the task is registered)",
    "overlap": "a tick while the task's previous run is still queued or running: 'skip' (default: the tick "
    "does not run and is recorded as skipped), 'queue' (it runs once that run ends; at most one waits) or "
    "'allow' (it runs alongside)",
    "align": "interval ticks: 'registration' (default: every interval from registration or start) or "
    "'epoch' (multiples of the interval since 1970-01-01 UTC: '5 minutes' at :00, :05...)",
    "limit": "flow limit of its runs: {rate: '60/m' or 'key:60/m', max_concurrency: N, "
    "concurrency_key: 'tenant:{tenant_id}'} (docs/flow-control.md)",
}
"""Every key a task definition accepts, with what it takes (used in error messages and the schema)."""


def name_schema() -> dict[str, Any]:
    """JSON schema of a task, agent or queue name."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": LIMITS["name"],
        "pattern": NAME_PATTERN,
        "x-pattern-message": f"must be {NAME_RULE}",
    }


def function_schema() -> dict[str, Any]:
    """JSON schema of a function reference (the text rule; resolving it is a second step)."""
    return {
        "type": "string",
        "minLength": 3,
        "maxLength": MAX_REFERENCE,
        "pattern": FUNCTION_PATTERN,
        "x-pattern-message": "must be an import path 'package.module:function'",
        "description": "Import path of a function defined in that module, `package.module:function`.",
    }


def _duration(field: str, minimum: float) -> dict[str, Any]:
    return {
        "type": ["number", "string", "null"],
        "minimum": minimum,
        "maximum": LIMITS[field],
        "maxLength": LIMITS["duration_text"],
        "description": FIELDS[field],
    }


def limit_schema() -> dict[str, Any]:
    """JSON schema of a flow limit (a task's ``limit``, ``POST /jobs``' ``limit``); the text rules are
    checked by :mod:`asyncsched.queue._limits`."""
    return {
        "type": ["object", "null"],
        "additionalProperties": False,
        "description": FIELDS["limit"],
        "properties": {
            "rate": {"type": ["string", "null"], "minLength": 3, "maxLength": 220},
            "max_concurrency": {"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000},
            "concurrency_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 200},
        },
    }


def task_schema() -> dict[str, Any]:
    """The API's ``TaskCreate`` body schema, derived from :data:`FIELDS` and :data:`LIMITS`."""
    props: dict[str, Any] = {
        "name": {**name_schema(), "description": "Unique per agent."},
        "agent_name": {**name_schema(), "description": "Owner agent; defaults to the server's agent."},
        "description": {"type": ["string", "null"], "maxLength": LIMITS["description"]},
        "enabled": {"type": "boolean", "default": True},
        "type": {"type": "string", "enum": ["interval", "cron", "date"]},
        "schedule": {
            "type": "string",
            "minLength": 1,
            "maxLength": LIMITS["schedule"],
            "description": "Cron expression (`0 9 * * *`), interval (`5 minutes`) or ISO time (date).",
        },
        "timezone": {"type": "string", "minLength": 1, "maxLength": LIMITS["timezone"], "default": "UTC"},
        "function": function_schema(),
        "args": {"type": "array", "maxItems": LIMITS["args"], "description": FIELDS["args"]},
        "kwargs": {"type": "object", "maxProperties": LIMITS["kwargs"], "description": FIELDS["kwargs"]},
        "queue": {**name_schema(), "default": "default"},
        "timeout": _duration("timeout", 1),
        "retry": {
            "type": ["integer", "object", "null"],
            "minimum": 0,
            "maximum": LIMITS["retry"],
            "maxProperties": 7,
            "description": FIELDS["retry"],
        },
        "jitter": _duration("jitter", 0),
        "misfire": {"type": "string", "enum": ["coalesce", "skip", "all"]},
        "misfire_grace": _duration("misfire_grace", 0),
        "start": {"type": "string", "format": "date-time", "description": FIELDS["start"]},
        "align": {"type": "string", "enum": ["registration", "epoch"], "description": FIELDS["align"]},
        "limit": limit_schema(),
        "overlap": {
            "type": "string",
            "enum": list(OVERLAPS),
            "default": "skip",
            "description": FIELDS["overlap"],
        },
    }
    assert set(props) - {"agent_name"} == set(FIELDS), "every field has a schema"
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "type", "schedule", "function"],
        "properties": props,
    }
