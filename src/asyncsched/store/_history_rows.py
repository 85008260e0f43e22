"""Lifecycle records and event-log entries decoded into the rows the Recorder writes, merged in a batch.

Records of one ``(job_id, attempt)`` inside a batch (queued, started, finished...) become ONE row: the
database sees one row write per execution per batch, however many records it had. The merge rule is the
one the SQL upsert applies against the stored row (see :mod:`asyncsched.store._history_sql`): the status
moves only to a strictly higher rank; fields of a record of higher or equal rank replace, of a lower rank
only fill what is missing; ``created_at`` keeps the earliest time; ``duration`` is ``ended_at -
started_at`` when both are known.

This is the Recorder's hot path (tens of thousands of records a second): records are merged from the raw
field/value list Redis returns, text is decoded once, timestamps stay floats until the row is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._lifecycle import RANK, RESULT_CAP, Lifecycle
from .models import EventMessage, ExecutionStatus, TaskExecution, _uuid, utcnow

__all__ = ["STATUS_OF", "Batch", "Row", "decode_event", "text"]

log = logging.getLogger("asyncsched.store.recorder")

STATUS_OF: Mapping[Lifecycle, ExecutionStatus] = {
    Lifecycle.SCHEDULED: ExecutionStatus.SCHEDULED,
    Lifecycle.DEFERRED: ExecutionStatus.DEFERRED,
    Lifecycle.QUEUED: ExecutionStatus.QUEUED,
    Lifecycle.STARTED: ExecutionStatus.RUNNING,
    Lifecycle.SUCCESS: ExecutionStatus.SUCCESS,
    Lifecycle.FAILED: ExecutionStatus.FAILED,
    Lifecycle.RETRY: ExecutionStatus.FAILED,
    Lifecycle.CANCELLED: ExecutionStatus.CANCELLED,
}
"""Execution status recorded for each lifecycle kind."""

_KINDS: Mapping[bytes, tuple[int, str]] = {
    kind.value.encode(): (RANK[kind], STATUS_OF[kind].value) for kind in Lifecycle
}
_TEXT = {  # record field -> column (text)
    b"agent_name": "agent_name",
    b"task_name": "task_name",
    b"function": "function",
    b"queue": "queue",
    b"worker": "worker_name",
    b"scheduled_task_id": "scheduled_task_id",
    b"result": "result",
    b"error": "error",
    b"traceback": "traceback",
}
_TIMES = {b"enqueued_at": "enqueued_at", b"started_at": "started_at", b"ended_at": "ended_at"}
_TRACEBACK_CAP = 65_536


def text(value: bytes | str) -> str:
    """Text of a Redis reply; undecodable bytes (garbage XADDed by hand) become U+FFFD, never an error."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _limit(table: Any, column: str) -> int | None:
    length: int | None = getattr(table.c[column].type, "length", None)
    return length


_EXEC = TaskExecution.__table__
_LIMITS = {
    name: _limit(_EXEC, name)
    for name in ("job_id", "scheduled_task_id", "agent_name", "task_name", "function", "queue", "worker_name")
}
_LIMITS["error"] = None
_LIMITS["traceback"] = _TRACEBACK_CAP


def clip(value: str | None, length: int | None) -> str | None:
    """Fit a text column: without NUL characters (PostgreSQL refuses them) and cut to ``length``."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "")
    if length is None or len(value) <= length:
        return value
    return value[:length]


def result_json(raw: str | None) -> str | None:
    """The JSON text stored for a record's result: as is when it is JSON, else as a JSON string."""
    if raw is None:
        return None
    if len(raw) > RESULT_CAP:
        return json.dumps({"truncated": True, "preview": raw[: RESULT_CAP - 64]})
    try:
        json.loads(raw)
    except ValueError:
        return json.dumps(raw)
    return raw


def epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class Row:
    """One execution being merged inside a batch (times as float epoch seconds)."""

    __slots__ = ("attempt", "created", "job_id", "rank", "status", "values")

    def __init__(self, job_id: str, attempt: int) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.rank = -1
        self.status = ExecutionStatus.QUEUED.value
        self.values: dict[str, Any] = {}
        self.created: float | None = None

    def apply(self, rank: int, status: str, fields: dict[bytes, bytes], seen_at: float) -> None:
        """Merge one record (raw field -> value, ``kind``/``job_id``/``attempt`` already read)."""
        wins = rank >= self.rank
        if rank > self.rank:
            self.rank, self.status = rank, status
        values = self.values
        earliest = seen_at
        for raw_name, raw_value in fields.items():
            column = _TEXT.get(raw_name)
            if column is not None:
                if wins or values.get(column) is None:
                    values[column] = text(raw_value)
                continue
            column = _TIMES.get(raw_name)
            if column is not None:
                moment = float(raw_value)
                if wins or values.get(column) is None:
                    values[column] = moment
                if column != "ended_at" and moment < earliest:
                    earliest = moment
        if self.created is None or earliest < self.created:
            self.created = earliest

    def sql_values(self, now: datetime) -> dict[str, Any]:
        """The column values of this row for the upsert (clipped, typed)."""
        v = self.values
        started, ended = v.get("started_at"), v.get("ended_at")
        duration = max(0.0, ended - started) if started is not None and ended is not None else None
        created = self.created
        return {
            "id": _uuid(),
            "job_id": clip(self.job_id, _LIMITS["job_id"]),
            "attempt": self.attempt,
            "status": self.status,
            "scheduled_task_id": clip(v.get("scheduled_task_id"), _LIMITS["scheduled_task_id"]),
            "agent_name": clip(v.get("agent_name"), _LIMITS["agent_name"]),
            "task_name": clip(v.get("task_name"), _LIMITS["task_name"]),
            "function": clip(v.get("function"), _LIMITS["function"]),
            "queue": clip(v.get("queue"), _LIMITS["queue"]) or "default",
            "worker_name": clip(v.get("worker_name"), _LIMITS["worker_name"]),
            "enqueued_at": epoch(v.get("enqueued_at")),
            "started_at": epoch(started),
            "ended_at": epoch(ended),
            "duration": duration,
            "result": result_json(v.get("result")),
            "error": clip(v.get("error"), None),
            "traceback": clip(v.get("traceback"), _TRACEBACK_CAP),
            "created_at": epoch(created) if created is not None else now,
            "updated_at": now,
        }


@dataclass
class Batch:
    """Entries of one read, decoded, with the ids to acknowledge per stream."""

    executions: dict[tuple[str, int], Row] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    ack: dict[str, list[bytes | str]] = field(default_factory=dict)
    trimmed: int = 0
    """Entries delivered again after Redis had trimmed them (read but never recorded): lost."""
    size: int = 0

    def __len__(self) -> int:
        return self.size

    def add_lifecycle(self, stream: str, entries: Sequence[Any]) -> None:
        """Merge lifecycle entries ``[id, [field, value, ...] | {field: value}]`` into the rows."""
        ids = self.ack.setdefault(stream, [])
        rows = self.executions
        for entry_id, raw in entries:
            ids.append(entry_id)
            self.size += 1
            if not raw:
                self.trimmed += 1
                continue
            try:
                if isinstance(raw, dict):
                    fields = {(k if isinstance(k, bytes) else k.encode()): _b(v) for k, v in raw.items()}
                else:
                    it = iter(raw)
                    fields = dict(zip(it, it, strict=True))
                rank, status = _KINDS[fields.pop(b"kind")]
                job_id = text(fields.pop(b"job_id"))
                raw_attempt = fields.pop(b"attempt", None)
                attempt = int(raw_attempt) if raw_attempt is not None else 1
                key = (job_id, attempt)
                row = rows.get(key)
                if row is None:
                    row = rows[key] = Row(job_id, attempt)
                row.apply(rank, status, fields, _entry_seconds(entry_id))
            except (KeyError, TypeError, ValueError) as exc:
                log.error("skipping malformed lifecycle entry %s (%s): %r", text(entry_id), exc, raw)

    def add_events(self, stream: str, entries: Sequence[Any]) -> None:
        """Event-log entries ``[id, {field: value}]`` as ``EventMessage`` rows (first of an id wins)."""
        ids = self.ack.setdefault(stream, [])
        for entry_id, raw in entries:
            ids.append(entry_id)
            self.size += 1
            if not raw:
                self.trimmed += 1
                continue
            fields = {text(k): text(v) for k, v in raw.items()}
            try:
                event = decode_event(fields)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("skipping malformed event-log entry %s (%s): %r", text(entry_id), exc, fields)
                continue
            self.events.setdefault(event["id"], event)


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _entry_seconds(entry_id: bytes | str) -> float:
    ms = entry_id.split(b"-", 1)[0] if isinstance(entry_id, bytes) else entry_id.split("-", 1)[0]
    return int(ms) / 1000


def _parse_time(value: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except ValueError:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def decode_event(fields: Mapping[str, str]) -> dict[str, Any]:
    """An ``EventMessage`` row from an event-log entry (flat fields, or one JSON field holding them)."""
    data: dict[str, Any] = dict(fields)
    if "id" not in data and len(data) == 1:
        data = json.loads(next(iter(data.values())))
        if not isinstance(data, dict):
            raise ValueError(f"event envelope is a JSON {type(data).__name__}, not an object")
    payload = data.get("payload")
    if isinstance(payload, str):
        payload = json.loads(payload) if payload else {}
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        payload = {"value": payload}
    created = data.get("created_at")
    table = EventMessage.__table__
    return {
        "id": clip(str(data["id"]), _limit(table, "id")),
        "event_type": clip(str(data["event_type"]), _limit(table, "event_type")),
        "source_agent": clip(str(data["source_agent"]), _limit(table, "source_agent")),
        "target_agent": clip(data.get("target_agent") or None, _limit(table, "target_agent")),
        "payload": payload,
        "created_at": _parse_time(str(created)) if created else utcnow(),
    }
