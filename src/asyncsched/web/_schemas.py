"""The JSON schemas of the API's request and response bodies (``components.schemas`` of the OpenAPI
document; :mod:`asyncsched.web._spec` holds the operations that use them).

Request bodies are validated against exactly these schemas (:mod:`asyncsched.web._validation`), so the
published document and the server cannot disagree.
"""

from __future__ import annotations

from typing import Any

from ..scheduler._fields import function_schema, limit_schema, name_schema, task_schema
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
    "Task": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "agent_name": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "enabled": {"type": "boolean"},
            "type": {"type": "string"},
            "schedule": {"type": "string"},
            "timezone": {"type": "string"},
            "function": {"type": "string"},
            "args": {"type": "array"},
            "kwargs": {"type": "object"},
            "queue": {"type": "string"},
            "options": {"type": "object"},
            "source": {"type": ["string", "null"]},
            "created_at": _datetime,
            "updated_at": _datetime,
            "last_run_at": _datetime,
            "next_run_at": _datetime,
            "degraded": _degraded,
        },
    },
    "TaskList": _page_of("Task"),
    "Execution": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "job_id": {"type": "string"},
            "scheduled_task_id": {"type": ["string", "null"]},
            "agent_name": {"type": ["string", "null"]},
            "task_name": {"type": ["string", "null"]},
            "function": {"type": ["string", "null"]},
            "queue": {"type": "string"},
            "status": {"type": "string", "enum": STATUSES},
            "attempt": {"type": "integer"},
            "worker_name": {"type": ["string", "null"]},
            "enqueued_at": _datetime,
            "started_at": _datetime,
            "ended_at": _datetime,
            "duration": {"type": ["number", "null"], "description": "Seconds."},
            "result": {},
            "error": {"type": ["string", "null"]},
            "traceback": {"type": ["string", "null"]},
            "progress": {
                "description": "The latest progress the job reported with current_job().progress(): a "
                "fraction from 0 to 1 or a JSON object (null when it reported none)."
            },
            "progress_at": _datetime,
            "degraded": _degraded,
        },
    },
    "ExecutionPage": _page_of("Execution"),
    "Event": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "event_type": {"type": "string"},
            "source_agent": {"type": "string"},
            "target_agent": {"type": ["string", "null"]},
            "payload": {"type": "object"},
            "created_at": _datetime,
            "degraded": _degraded,
        },
    },
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
