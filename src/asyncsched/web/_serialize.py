"""JSON views of the objects the API returns, and a JSON response that renders datetimes and enums.

Items of lists are made one at a time by :func:`display_item`, which never raises: a stored row that
cannot be loaded, or whose values cannot be written as UTF-8 JSON (lone surrogates, non-finite numbers,
an oversized payload), is shown degraded, with a ``degraded`` field saying what was changed, and logged;
the rest of the page is unaffected.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from starlette.responses import JSONResponse

from .._boundary import SURROGATE
from .._jsonable import json_default as _default
from .._jsonable import plain
from ._live import event_to_dict

__all__ = [
    "ApiJSON",
    "display_item",
    "event_view",
    "execution_to_dict",
    "job_to_dict",
    "plain",
    "task_to_dict",
    "worker_to_dict",
]

log = logging.getLogger("asyncsched.web")

_TASK_TIMES = ("created_at", "updated_at", "last_run_at", "next_run_at")
"""A task's fields besides its identity and the columns its definition sets (``scheduler._rows.COLUMNS``)."""
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
    "progress",
    "progress_at",
)


_encode = json.JSONEncoder(default=_default, ensure_ascii=False, allow_nan=False).encode


class ApiJSON(JSONResponse):
    """``JSONResponse`` that renders datetimes (ISO 8601), enums, tuples and anything else (``repr``).

    Text that is not valid UTF-8 (a lone surrogate) is written as U+FFFD rather than failing the answer
    (lists mark such items :func:`degraded <display_item>` first).
    """

    def render(self, content: object) -> bytes:
        text = _encode(content)
        if not text.isascii() and SURROGATE.search(text) is not None:
            text = SURROGATE.sub("\ufffd", text)
        return text.encode()


def _pick(obj: object, names: tuple[str, ...]) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return {n: plain(obj.get(n)) for n in names}
    return {n: plain(getattr(obj, n, None)) for n in names}


def task_to_dict(task: object) -> dict[str, Any]:
    """A scheduled task (the SQL model or the scheduler's own view)."""
    from ..scheduler._rows import COLUMNS  # loaded with the task shown (the router imports no engine)

    data = _pick(task, ("id", "agent_name", "name", *COLUMNS, *_TASK_TIMES))
    for key, empty in (("args", []), ("kwargs", {}), ("options", {})):
        if data[key] is None:
            data[key] = empty
    if isinstance(data["type"], enum.Enum):
        data["type"] = data["type"].value
    return data


def execution_to_dict(execution: object) -> dict[str, Any]:
    """A ``TaskExecution`` row (an empty ``worker_name``, as recorded for a job cancelled before any
    worker took it, is ``null``: no worker)."""
    data = _pick(execution, EXECUTION_FIELDS)
    if not data["worker_name"]:
        data["worker_name"] = None
    return data


def job_to_dict(job: object) -> dict[str, Any]:
    """A queue ``JobRecord``."""
    data = plain(job)
    if not isinstance(data, dict):
        data = {"id": str(job)}
    return dict(data)


def worker_to_dict(worker: object) -> dict[str, Any]:
    """A queue ``WorkerInfo``."""
    data = plain(worker)
    return dict(data) if isinstance(data, dict) else {"name": str(worker)}


_LONE = "stored text is not valid UTF-8 (lone surrogates shown as U+FFFD)"
_NONFINITE = "stored numbers that are not finite (NaN, Infinity) shown as null"


def _checked(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as it can be written as UTF-8 JSON, with ``degraded`` saying what had to change."""
    reasons: list[str] = []
    try:
        text = _encode(data)
    except ValueError:  # NaN or Infinity in a JSON column (SQLite stores them)
        text = json.dumps(data, default=_default, ensure_ascii=False)
        reasons.append(_NONFINITE)
    if not text.isascii() and SURROGATE.search(text) is not None:
        text = SURROGATE.sub("\ufffd", text)
        reasons.append(_LONE)
    if not reasons:
        return data
    fixed: dict[str, Any] = json.loads(text, parse_constant=lambda _name: None)
    fixed["degraded"] = "; ".join(reasons)
    return fixed


def display_item(row: object, view: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """``view(row)`` made safe to show (see the module docstring); never raises."""
    row_id = str(getattr(row, "id", None) or getattr(row, "name", None) or "?")
    if hasattr(row, "table") and hasattr(row, "reason"):  # a store UnreadableRow
        return {"id": row_id, "degraded": str(row.reason)}
    try:
        return _checked(view(row))
    except Exception as exc:  # one item must not fail the page
        log.warning("cannot show item %s: %s: %s", row_id, type(exc).__name__, exc)
        return {"id": row_id, "degraded": f"cannot be shown: {type(exc).__name__}"}


def event_view(max_payload_bytes: int) -> Callable[[Any], dict[str, Any]]:
    """The view of a stored event whose payload is shown only up to ``max_payload_bytes`` (events stored
    before the limit was set, or by another writer, could make every page huge)."""

    def view(row: Any) -> dict[str, Any]:
        data = event_to_dict(row)
        payload = data.get("payload")
        size = len(_encode(payload).encode("utf-8", "surrogatepass"))
        if size > max_payload_bytes:
            data["payload"] = {}
            data["degraded"] = (
                f"payload of {size} bytes not shown (over ASYNCSCHED_MAX_PAYLOAD_BYTES={max_payload_bytes})"
            )
        return data

    return view
