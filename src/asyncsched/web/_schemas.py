"""The JSON schemas of the API's request and response bodies (``components.schemas`` of the OpenAPI
document; :mod:`asyncsched.web._spec` holds the operations that use them).

Request bodies are validated against exactly these schemas (:mod:`asyncsched.web._validation`), so the
published document and the server cannot disagree.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Integer, String
from sqlalchemy.types import TypeEngine

from ..scheduler._fields import function_schema, limit_schema, name_schema, task_schema
from ..store.models import Base, EventMessage, ScheduledTask, TaskExecution, UTCDateTime
from ._bulk import bulk_schemas
from ._ops import ops_schemas
from ._rqscheduler import RQ_SCHEDULER_SCHEMAS

__all__ = ["PRINTABLE", "SCHEMAS", "STATUSES"]

PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
"""No control characters (ids, names and patterns in paths and queries)."""
STATUSES = [
    "scheduled",
    "deferred",
    "queued",
    "running",
    "success",
    "failed",
    "cancelled",
    "skipped",
    "unknown",
]

_name = name_schema()
_function = function_schema()
_datetime = {"type": ["string", "null"], "format": "date-time"}
_any_list = {"type": "array", "maxItems": 100}
_any_object = {"type": "object", "maxProperties": 100}
_degraded = {
    "type": "string",
    "description": "Present only when the stored item could not be shown as is: what was changed or left "
    "out (the rest of the page is unaffected).",
}


_object = {"type": "object"}
_COLUMN_TYPES: tuple[tuple[type[TypeEngine[Any]], str], ...] = (
    (Boolean, "boolean"),
    (Integer, "integer"),
    (Float, "number"),
    (String, "string"),  # Text too
)


def _row_schema(
    model: type[Base], exclude: Collection[str] = (), **special: dict[str, Any]
) -> dict[str, Any]:
    """The JSON view of a stored row: a property per column of ``model`` (but ``exclude``), typed from the
    column (``null`` too when it is nullable; times as ``_datetime``), ``special`` where the column says too
    little (JSON columns, enums, descriptions); and ``degraded``."""
    properties: dict[str, Any] = {}
    for column in model.__table__.columns:
        if column.name in exclude:
            continue
        if column.name in special:
            properties[column.name] = special.pop(column.name)
        elif isinstance(column.type, DateTime | UTCDateTime):
            properties[column.name] = _datetime
        else:
            kind = next(name for sql, name in _COLUMN_TYPES if isinstance(column.type, sql))
            properties[column.name] = {"type": [kind, "null"] if column.nullable else kind}
    if special:
        raise ValueError(f"{model.__name__} has no column {', '.join(special)}")
    return {"type": "object", "properties": {**properties, "degraded": _degraded}}


def _page_of(item: str, **extra: Any) -> dict[str, Any]:
    """A page of a list: ``items`` at ``offset`` (at most ``limit``) out of ``total``."""
    return {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "total": {"type": "integer", "description": "Items matching the filters, on all pages."},
            "total_capped": {
                "type": "boolean",
                "description": "More items match than were counted (history lists count at most 10,000, "
                "or to the page's end past that): `total` is then a lower bound.",
            },
            "offset": {"type": "integer"},
            "limit": {"type": "integer"},
            **extra,
        },
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "TaskCreate": task_schema(),
    "Task": _row_schema(
        ScheduledTask, exclude={"anchor_at"}, args={"type": "array"}, kwargs=_object, options=_object
    ),
    "TaskList": _page_of("Task"),
    "Execution": _row_schema(
        TaskExecution,
        exclude={"created_at", "updated_at"},
        status={"type": "string", "enum": STATUSES},
        duration={"type": ["number", "null"], "description": "Seconds."},
        result={},
        progress={
            "description": "The latest progress the job reported with current_job().progress(): a "
            "fraction from 0 to 1 or a JSON object (null when it reported none)."
        },
    ),
    "ExecutionPage": _page_of("Execution"),
    "Event": _row_schema(EventMessage, payload=_object),
    "EventPage": _page_of("Event", source={"type": "string", "enum": ["database", "live"]}),
    "JobCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["function"],
        "properties": {
            "function": _function,
            "args": _any_list,
            "kwargs": _any_object,
            "queue": {**_name, "default": "default"},
            "agent_name": _name,
            "task_name": _name,
            "description": {"type": ["string", "null"], "maxLength": 2000},
            "timeout": {"type": ["integer", "null"], "minimum": 1, "maximum": 604800},
            "retry": {
                "type": ["integer", "object", "null"],
                "minimum": 0,
                "maximum": 100,
                "maxProperties": 7,
                "description": "Retries: a count, {max, interval}, or {max, backoff: exponential, base, cap, "
                "jitter}; `on: [exception class names]` retries only on those (see docs/queue.md).",
            },
            "delay": {"type": ["number", "null"], "minimum": 0, "maximum": 31536000},
            "at": {"type": ["string", "null"], "format": "date-time"},
            "depends_on": {
                "type": ["array", "null"],
                "items": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "minLength": 1, "maxLength": 128},
                "minItems": 1,
                "maxItems": 100,
            },
            "allow_dependency_failures": {"type": "boolean"},
            "repeat": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "required": ["times"],
                "properties": {
                    "times": {"type": "integer", "minimum": 1, "maximum": 10000},
                    "interval": {"type": "integer", "minimum": 0, "maximum": 31536000},
                },
            },
            "rate_limit": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "required": ["key", "concurrency"],
                "properties": {
                    "key": {"type": "string", "minLength": 1, "maxLength": 200},
                    "concurrency": {"type": "integer", "minimum": 1, "maximum": 100000},
                },
            },
            "limit": limit_schema(),
        },
    },
    "JobAccepted": {
        "type": "object",
        "properties": {"job_id": {"type": "string"}, "status": {"type": "string"}},
    },
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "function": {"type": "string"},
            "status": {"type": "string"},
            "queue": {"type": "string"},
            "agent_name": {"type": ["string", "null"]},
            "task_name": {"type": ["string", "null"]},
            "result": {},
            "error": {"type": ["string", "null"]},
            "attempt": {"type": "integer"},
            "meta": {"type": "object"},
            "progress": {
                "description": "What the job reported with current_job().progress(): a fraction from 0 to 1 "
                "or a JSON object (null when it reported none); also meta.progress."
            },
        },
    },
    "Queue": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "degraded": _degraded,
        },
    },
    "QueueList": _page_of("Queue"),
    "Worker": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "queues": {"type": "array", "items": {"type": "string"}},
            "state": {"type": ["string", "null"]},
            "last_heartbeat": _datetime,
            "degraded": _degraded,
        },
    },
    "WorkerList": _page_of("Worker"),
    "Limit": {
        "type": "object",
        "description": "A rate limit or concurrency cap in use (asyncsched flow limit or RQ 3 RateLimit).",
        "properties": {
            "key": {"type": "string"},
            "kind": {"type": "string", "enum": ["asyncsched", "rq"]},
            "max_concurrency": {"type": ["integer", "null"]},
            "rate": {"type": ["integer", "null"], "description": "Starts allowed per `period`."},
            "period": {"type": ["number", "null"], "description": "Seconds."},
            "running": {"type": "integer", "description": "Jobs holding a slot (RQ: queued or running)."},
            "started": {"type": "integer", "description": "Starts in the current rate window."},
            "waiting": {"type": "integer", "description": "Jobs parked until the limit has room."},
        },
    },
    "LimitList": _page_of("Limit"),
    "Health": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
            "redis": {"type": "string"},
            "database": {"type": "string"},
            "history": {
                "type": "string",
                "description": "Present when history was lost in the last hour (status degraded).",
            },
        },
    },
    "ValidationError": {
        "type": "object",
        "properties": {
            "detail": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                        "msg": {"type": "string"},
                        "type": {"type": "string"},
                    },
                },
            }
        },
    },
    "Error": {"type": "object", "properties": {"detail": {"type": "string"}}},
}


SCHEMAS.update(RQ_SCHEDULER_SCHEMAS)
SCHEMAS.update(ops_schemas(SCHEMAS["TaskCreate"]))
SCHEMAS.update(bulk_schemas(SCHEMAS["TaskCreate"]))
SCHEMAS["Queue"]["properties"]["paused"] = {"type": "boolean", "description": "Paused: workers take none."}
