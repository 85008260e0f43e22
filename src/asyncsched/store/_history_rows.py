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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, overload

from .._lifecycle import RANK, RESULT_CAP, Lifecycle
from .._streams import Poison
from ..events._poison import report_malformed
from .models import EventMessage, ExecutionStatus, TaskExecution, utcnow

__all__ = ["STATUS_OF", "Batch", "ExecutionRow", "Row", "decode_event", "micros", "stream_items", "text"]

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
    Lifecycle.SKIPPED: ExecutionStatus.SKIPPED,
    Lifecycle.PROGRESS: ExecutionStatus.RUNNING,
}
"""Execution status recorded for each lifecycle kind."""

_KINDS: Mapping[bytes, tuple[int, str]] = {
    kind.value.encode(): (RANK[kind], STATUS_OF[kind].value) for kind in Lifecycle
}
_TRACEBACK_CAP = 65_536
_TIME_FIELDS = (b"enqueued_at", b"started_at", b"ended_at", b"progress_at")


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
_JOB_ID = _LIMITS["job_id"]


@overload
def clip(value: str, length: int | None) -> str: ...
@overload
def clip(value: str | None, length: int | None) -> str | None: ...
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
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to parse: kept as text
        return json.dumps(raw)
    return raw


class ExecutionRow(NamedTuple):
    """The values of one execution row as the upsert sends them (every column but the generated ``id``).

    Times are integer epoch microseconds (UTC), rounded exactly as ``datetime.fromtimestamp`` rounds;
    text is decoded and clipped to its column; ``result`` is JSON text."""

    job_id: str
    attempt: int
    status: str
    scheduled_task_id: str | None
    agent_name: str | None
    task_name: str | None
    function: str | None
    queue: str
    worker_name: str | None
    enqueued_at: int | None
    started_at: int | None
    ended_at: int | None
    duration: float | None
    result: str | None
    error: str | None
    traceback: str | None
    created_at: int
    updated_at: int
    progress: str | None
    progress_at: int | None


def micros(value: float) -> int:
    """Epoch seconds as integer microseconds, rounded exactly as ``datetime.fromtimestamp`` rounds."""
    whole = int(value) if value >= 0 else math.floor(value)
    return whole * 1_000_000 + round((value - whole) * 1e6)


class Row:
    """One execution being merged inside a batch: raw record fields (bytes), merged by rank."""

    __slots__ = ("attempt", "first_seen", "ids", "job_id", "rank", "status", "values")

    def __init__(
        self,
        job_id: str,
        attempt: int,
        first_seen: bytes | str,
        rank: int,
        status: str,
        values: dict[bytes, Any],
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.rank = rank
        self.status = status
        self.values = values  # the first record's own field dict: no copy
        self.first_seen = first_seen  # id of its first entry in the batch (entries come in id order)
        self.ids: list[bytes | str] = [
            first_seen
        ]  # its entries' ids (a row may be held back, unacknowledged)

    def apply(self, rank: int, status: str, fields: dict[bytes, Any], entry_id: bytes | str = b"") -> None:
        """Merge one record's remaining fields (``kind``/``job_id``/``attempt`` already taken out)."""
        self.ids.append(entry_id)
        if rank >= self.rank:
            self.values.update(fields)  # equal or higher rank: its fields replace
            if rank > self.rank:
                self.rank, self.status = rank, status
        else:
            fields.update(self.values)  # lower rank: only fills what is missing
            self.values = fields

    def sql_values(self, now: int, texts: dict[bytes, str | None]) -> ExecutionRow:
        """This row's column values (``now``: epoch microseconds; ``texts``: a cache of decoded short
        texts shared by the rows of a batch: queue, function and worker names repeat)."""
        v = self.values
        enqueued, started, ended = v.get(b"enqueued_at"), v.get(b"started_at"), v.get(b"ended_at")
        created = _entry_micros(self.first_seen)
        if enqueued is not None:
            enqueued = micros(enqueued)
            created = min(created, enqueued)
        if started is not None:
            started = micros(started)
            created = min(created, started)
        if ended is not None:
            ended = micros(ended)
        result = v.get(b"result")
        error = v.get(b"error")
        traceback = v.get(b"traceback")
        progress, progress_at = v.get(b"progress"), v.get(b"progress_at")
        return ExecutionRow(
            clip(self.job_id, _JOB_ID),
            self.attempt,
            self.status,
            _short(v.get(b"scheduled_task_id"), texts, _LIMITS["scheduled_task_id"]),
            _short(v.get(b"agent_name"), texts, _LIMITS["agent_name"]),
            _short(v.get(b"task_name"), texts, _LIMITS["task_name"]),
            _short(v.get(b"function"), texts, _LIMITS["function"]),
            _short(v.get(b"queue"), texts, _LIMITS["queue"]) or "default",
            _short(v.get(b"worker"), texts, _LIMITS["worker_name"]),
            enqueued,
            started,
            ended,
            max(0.0, (ended - started) / 1e6) if started is not None and ended is not None else None,
            None if result is None else result_json(result.decode(errors="replace")),
            None if error is None else clip(error.decode(errors="replace"), None),
            None if traceback is None else clip(traceback.decode(errors="replace"), _TRACEBACK_CAP),
            created,
            now,
            None if progress is None else result_json(progress.decode(errors="replace")),
            None if progress_at is None else micros(progress_at),
        )


def _short(raw: bytes | None, texts: dict[bytes, str | None], length: int | None) -> str | None:
    """A short text column from its raw bytes, decoded and clipped once per batch (``texts``)."""
    if raw is None:
        return None
    try:
        return texts[raw]
    except KeyError:
        value = texts[raw] = clip(raw.decode(errors="replace"), length)
        return value


@dataclass
class Batch:
    """Entries of one read, decoded, with the ids to acknowledge per stream."""

    executions: dict[tuple[str, int], Row] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    ack: dict[str, list[bytes | str]] = field(default_factory=dict)
    poison: list[Poison] = field(default_factory=list)
    """Entries that cannot be decoded (acknowledged with the batch, into the dead-letter stream)."""
    trimmed: int = 0
    """Entries delivered again after Redis had trimmed them (read but never recorded): lost."""
    size: int = 0

    def __len__(self) -> int:
        return self.size

    def add_lifecycle(self, stream: str, entries: Sequence[Any]) -> None:
        """Merge lifecycle entries ``[id, [field, value, ...] | {field: value}]`` into the rows."""
        self.ack.setdefault(stream, []).extend([entry[0] for entry in entries])
        self.size += len(entries)
        rows = self.executions
        kinds = _KINDS
        for entry_id, raw in entries:
            if not raw:
                self.trimmed += 1
                continue
            try:
                fields: dict[bytes, Any]
                if isinstance(raw, dict):
                    fields = {(k if isinstance(k, bytes) else k.encode()): _b(v) for k, v in raw.items()}
                else:
                    it = iter(raw)
                    fields = dict(zip(it, it, strict=False))
                rank, status = kinds[fields.pop(b"kind")]
                job_id = fields.pop(b"job_id").decode(errors="replace")
                raw_attempt = fields.pop(b"attempt", None)
                attempt = int(raw_attempt) if raw_attempt is not None else 1
                for name in _TIME_FIELDS:  # checked here: a bad value skips its record, not the batch
                    raw_time = fields.get(name)
                    if raw_time is not None:
                        fields[name] = _finite(raw_time)
                key = (job_id, attempt)
                row = rows.get(key)
                if row is None:
                    rows[key] = Row(job_id, attempt, entry_id, rank, status, fields)
                else:
                    row.apply(rank, status, fields, entry_id)
            except Exception as exc:  # any entry, however broken, is skipped on its own
                reason = f"entry {text(entry_id)}: {type(exc).__name__}: {exc}"
                report_malformed("history entry", stream, reason, raw, log)
                self.poison.append(Poison(stream, entry_id, f"malformed: {reason}", raw))

    def rows(self, now: int) -> list[ExecutionRow]:
        """The merged rows' column values (``now``: epoch microseconds, their ``updated_at``)."""
        texts: dict[bytes, str | None] = {}
        return [row.sql_values(now, texts) for row in self.executions.values()]

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
            except Exception as exc:
                reason = f"entry {text(entry_id)}: {type(exc).__name__}: {exc}"
                report_malformed("history entry", stream, reason, fields, log)
                self.poison.append(Poison(stream, entry_id, f"malformed: {reason}", fields))
                continue
            self.events.setdefault(event["id"], event)


_MAX_SECONDS = 253402300799.0  # 9999-12-31T23:59:59: the last time both databases store


def _finite(raw: bytes | str) -> float:
    """A record's time (epoch seconds), refused when it is not a time both databases can store."""
    value = float(raw)
    if not 0.0 <= value <= _MAX_SECONDS:
        raise ValueError(f"time {value!r} is out of range")
    return value


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _entry_micros(entry_id: bytes | str) -> int:
    ms = entry_id.split(b"-", 1)[0] if isinstance(entry_id, bytes) else entry_id.split("-", 1)[0]
    return int(ms) * 1000


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


def stream_items(reply: Any) -> list[tuple[str, Any]]:
    """``(stream, entries)`` of an XREAD/XREADGROUP reply, RESP2 or RESP3."""
    items: Any = reply.items() if isinstance(reply, dict) else (reply or [])
    out = []
    for stream, entries in items:
        if isinstance(entries, list) and len(entries) == 1 and isinstance(entries[0], list):
            entries = entries[0]  # RESP3 wraps entries once more
        out.append((text(stream), entries or []))
    return out
