"""JSON views of the objects the API returns, and a JSON response that renders datetimes and enums."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from starlette.responses import JSONResponse

__all__ = ["ApiJSON", "execution_to_dict", "job_to_dict", "plain", "task_to_dict", "worker_to_dict"]

TASK_FIELDS = (
    "id",
    "agent_name",
    "name",
    "description",
    "enabled",
    "type",
    "schedule",
    "timezone",
    "function",
    "args",
    "kwargs",
    "queue",
    "options",
    "source",
    "created_at",
    "updated_at",
    "last_run_at",
    "next_run_at",
)
EXECUTION_FIELDS = (
    "id",
    "job_id",
    "scheduled_task_id",
    "agent_name",
    "task_name",
    "function",
    "queue",
    "status",
    "attempt",
    "worker_name",
    "enqueued_at",
    "started_at",
    "ended_at",
    "duration",
    "result",
    "error",
    "traceback",
)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(value)
    return repr(value)


class ApiJSON(JSONResponse):
    """``JSONResponse`` that renders datetimes (ISO 8601), enums, tuples and anything else (``repr``)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_default, ensure_ascii=False, allow_nan=False).encode()


def plain(obj: Any) -> Any:
    """A JSON-able view of a dataclass, mapping or object with ``__dict__`` (shallow for objects)."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


def _pick(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return {n: plain(obj.get(n)) for n in names}
    return {n: plain(getattr(obj, n, None)) for n in names}


def task_to_dict(task: Any) -> dict[str, Any]:
    """A scheduled task (the SQL model or the scheduler's own view)."""
    data = _pick(task, TASK_FIELDS)
    for key, empty in (("args", []), ("kwargs", {}), ("options", {})):
        if data[key] is None:
            data[key] = empty
    if isinstance(data["type"], enum.Enum):
        data["type"] = data["type"].value
    return data


def execution_to_dict(execution: Any) -> dict[str, Any]:
    """A ``TaskExecution`` row."""
    return _pick(execution, EXECUTION_FIELDS)


def job_to_dict(job: Any) -> dict[str, Any]:
    """A queue ``JobRecord``."""
    data = plain(job)
    if not isinstance(data, dict):
        data = {"id": str(job)}
    return dict(data)


def worker_to_dict(worker: Any) -> dict[str, Any]:
    """A queue ``WorkerInfo``."""
    data = plain(worker)
    return dict(data) if isinstance(data, dict) else {"name": str(worker)}
