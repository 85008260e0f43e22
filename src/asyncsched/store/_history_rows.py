"""Lifecycle records and event-log entries decoded into the rows the Recorder writes, merged in a batch.

Records of one ``(job_id, attempt)`` inside a batch (queued, started, finished...) become ONE row: the
database sees one row write per execution per batch, however many records it had. The merge rule is the
one the SQL upsert applies against the stored row (see :mod:`asyncsched.store._history_sql`): the status
moves only to a strictly higher rank; fields of a record of higher or equal rank replace, of a lower rank
only fill what is missing; ``created_at`` keeps the earliest time; ``duration`` is ``ended_at -
started_at`` when both are known.

The Recorder's hot path (tens of thousands of records a second): records come as one flat list per read;
a packed record (:mod:`asyncsched._lifecycle`) becomes one dict of its raw bytes by tag with one split,
a record of the earlier format (one stream field per field) the same dict; rows are such dicts (see
:data:`Row`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .._lifecycle import PACKED, RANK, SEP, TAGS, Lifecycle
from .._streams import Poison
from ..events._poison import report_malformed
from ..rq.slots import untagged
from ._history_text import clip, column_length, decode_event, result_json, stream_items, text
from .models import ExecutionStatus, TaskExecution

__all__ = [
    "ROW_ATTEMPT", "ROW_HELD", "ROW_IDS", "ROW_JOB", "ROW_RANK", "ROW_STATUS", "STATUS_OF", "Batch",
    "ExecutionRow", "Row", "decode_event", "micros", "stream_items", "text",
]  # fmt: skip

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
_TIME_FIELDS = (b"e", b"s", b"d", b"p")  # enqueued_at, started_at, ended_at, progress_at (their tags)
_PACKED, _SEP = PACKED.encode(), SEP.encode()
_TAG_OF = {name.encode(): tag.encode() for name, tag in TAGS.items()}
"""A record field's key in a row: its tag (a free-text field's, its name)."""


_EXEC = TaskExecution.__table__
_LIMITS = {
    name: column_length(_EXEC, name)
    for name in ("job_id", "scheduled_task_id", "agent_name", "task_name", "function", "queue", "worker_name")
}
_LIMITS["error"] = None
_LIMITS["traceback"] = _TRACEBACK_CAP
_JOB_ID = _LIMITS["job_id"]
_JOB_ID_MAX = 1 << 62 if _JOB_ID is None else _JOB_ID  # (sql_values checks the length inline)


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


Row = dict[Any, Any]
"""One execution being merged: the merged record fields (keys: the fields' tags (``_lifecycle.TAGS``) or,
free text, names, as bytes; raw bytes or float times) and its
bookkeeping under int keys: ``ROW_RANK``, ``ROW_STATUS``, ``ROW_JOB``, ``ROW_ATTEMPT``, ``ROW_IDS`` (its
entries' ids joined by ``,``: a row may be held back unacknowledged) and ``ROW_HELD`` (held rows: since
when). Only text and numbers: the garbage collector does not track such a dict, so the thousands of rows
alive at once (in flight, held) cost its collections nothing (as objects: a quarter of the Recorder's CPU)."""

ROW_RANK, ROW_STATUS, ROW_JOB, ROW_ATTEMPT, ROW_IDS, ROW_HELD = range(6)


def new_row(job_id: str, attempt: int, entry_id: bytes, rank: int, status: str, fields: Row) -> Row:
    """A row from its first record's field dict (taken over, not copied; without its kind, job id and
    attempt, kept under the bookkeeping keys: a smaller dict, as held rows are)."""
    del fields[b"k"], fields[b"j"]
    if b"a" in fields:
        del fields[b"a"]
    fields[ROW_RANK], fields[ROW_STATUS], fields[ROW_JOB] = rank, status, job_id
    fields[ROW_ATTEMPT], fields[ROW_IDS] = attempt, entry_id
    return fields


_new = tuple.__new__


def sql_values(
    v: Row, now: int, texts: dict[tuple[Any, ...], tuple[str | None, ...]], untag: bool = False
) -> ExecutionRow:
    """A row's column values (``now``: epoch microseconds; ``texts``: the short text columns decoded
    once per batch: rows of a batch mostly share their task, queue and worker; ``untag``: on a Redis
    Cluster, the queue and worker as users name them, without their hash tags)."""
    get = v.get
    raw = (get(b"c"), get(b"g"), get(b"t"), get(b"f"), get(b"q"), get(b"w"))  # (tags, see _lifecycle.TAGS)
    short = texts.get(raw)
    if short is None:
        short = texts[raw] = _short(raw, untag)
    enqueued, started, ended = get(b"e"), get(b"s"), get(b"d")
    ids, job = v[ROW_IDS], v[ROW_JOB]
    created = int(ids[: ids.index(b"-")]) * 1000  # the time of its first entry
    if enqueued is not None:
        enqueued = micros(enqueued)
        created = min(created, enqueued)
    if started is not None:
        started = micros(started)
        created = min(created, started)
    if ended is not None:
        ended = micros(ended)
    result, error, traceback = get(b"result"), get(b"error"), get(b"traceback")
    progress, progress_at = get(b"progress"), get(b"p")
    return _new(
        ExecutionRow,
        (
            job if len(job) <= _JOB_ID_MAX and "\x00" not in job else clip(job, _JOB_ID),  # (clip, inline)
            v[ROW_ATTEMPT],
            v[ROW_STATUS],
            *short,
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
        ),
    )


_SHORT_LIMITS = tuple(
    _LIMITS[c] for c in ("scheduled_task_id", "agent_name", "task_name", "function", "queue", "worker_name")
)


def _untagged(name: bytes) -> bytes:
    """A cluster's queue or worker name in Redis (``{q}``, ``{q}<w>``) as users know it."""
    return (untagged(name.decode(errors="replace")) or "").encode()


def _short(raw: tuple[bytes | None, ...], untag: bool) -> tuple[str | None, ...]:
    """The short text columns (scheduled task id, agent, task, function, queue, worker) from their raw
    bytes: decoded and clipped to each column (the queue ``default`` when missing; ``untag``: the queue
    ``{q}`` and the worker ``{q}<w>`` of a cluster's records as ``q`` and ``<w>``)."""
    if untag:
        raw = raw[:4] + tuple(None if r is None else _untagged(r) for r in raw[4:])
    out = [
        None if r is None else clip(r.decode(errors="replace"), n)
        for r, n in zip(raw, _SHORT_LIMITS, strict=True)
    ]
    out[4] = out[4] or "default"
    return tuple(out)


@dataclass
class Batch:
    """Entries of one read, decoded, with the ids to acknowledge per stream."""

    executions: dict[tuple[bytes, int], Row] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    ack: dict[str, list[bytes | str]] = field(default_factory=dict)
    poison: list[Poison] = field(default_factory=list)
    """Entries that cannot be decoded (acknowledged with the batch, into the dead-letter stream)."""
    trimmed: int = 0
    """Entries delivered again after Redis had trimmed them (read but never recorded): lost."""
    size: int = 0
    held: dict[tuple[bytes, int], Row] | None = None
    """Rows held back (:class:`~._recorder_hold.QueuedHold`): their executions' records merge into them."""
    touched: dict[tuple[bytes, int], tuple[Row, bytes]] = field(default_factory=dict)
    """The held rows this batch merged records into, each with its ``ROW_IDS`` before."""

    def __len__(self) -> int:
        return self.size

    def add_lifecycle(self, stream: str, entries: Sequence[Any]) -> None:
        """Merge lifecycle entries ``[id, [field, value, ...] | {field: value}]`` (text or bytes, either
        format) into the rows."""
        self._merge(stream, [(entry[0], entry[1]) for entry in entries])

    def add_entries(self, stream: str, entries: Sequence[Any]) -> Any:
        """Merge lifecycle entries as a read returns them: ``(id, fields)``, fields as a flat ``[field,
        value, ...]`` list of bytes or a dict (``None`` or empty: trimmed). Returns the last id."""
        self._merge(stream, entries)
        return entries[-1][0] if entries else None

    def _merge(self, stream: str, records: Iterable[tuple[Any, Any]]) -> None:
        """Merge ``(entry id, fields)`` records (fields: a flat ``[field, value, ...]`` list of bytes or a
        dict, either format; ``None`` or empty: trimmed) into the rows, one pass."""
        ids = self.ack.setdefault(stream, [])
        before = len(ids)
        rows, kinds, times, held, touched = self.executions, _KINDS, _TIME_FIELDS, self.held, self.touched
        for entry_id, raw in records:
            ids.append(entry_id)
            if not raw:
                self.trimmed += 1
                continue
            fields = raw
            if fields.__class__ is list and fields[0] == _PACKED:  # the usual record: one split
                it = iter(fields[1].split(_SEP))
                packed = dict(zip(it, it))  # noqa: B905 (pairs: an odd part is dropped)
                for i in range(2, len(fields) - 1, 2):  # free text, or a value holding the separator
                    name = fields[i]
                    packed[_TAG_OF.get(name, name)] = fields[i + 1]
                fields = packed
            else:
                fields = _fields(fields)
            try:
                rank, status = kinds[fields[b"k"]]
                raw_attempt = fields.get(b"a")
                attempt = 1 if raw_attempt is None or raw_attempt == b"1" else int(raw_attempt)
                for name in times:  # checked here: a bad value skips its record, not the batch
                    raw_time = fields.get(name)
                    if raw_time is not None:
                        value = float(raw_time)
                        if not 0.0 <= value <= _MAX_SECONDS:
                            raise ValueError(f"time {value!r} is out of range")
                        fields[name] = value
                key = (fields[b"j"], attempt)
                eid = entry_id if entry_id.__class__ is bytes else _b(entry_id)
                row = rows.get(key)
                if row is None and held is not None:
                    row = held.get(key)
                    if row is not None and key not in touched:
                        touched[key] = (row, row[ROW_IDS])
                if row is None:
                    rows[key] = new_row(key[0].decode(errors="replace"), attempt, eid, rank, status, fields)
                    continue
                # the merge rule: the status moves only to a higher rank; fields of an equal or higher
                # rank replace, of a lower rank only fill what is missing
                row[ROW_IDS] += b"," + eid
                if rank >= row[ROW_RANK]:
                    row.update(fields)
                    if rank > row[ROW_RANK]:
                        row[ROW_RANK], row[ROW_STATUS] = rank, status
                else:
                    for name, value in fields.items():
                        row.setdefault(name, value)
            except Exception as exc:  # any entry, however broken, is skipped on its own
                reason = f"entry {text(entry_id)}: {type(exc).__name__}: {exc}"
                if raw.__class__ is list:  # the entry's fields as written
                    it = iter(raw)
                    raw = dict(zip(it, it))  # noqa: B905
                report_malformed("history entry", stream, reason, raw, log)
                self.poison.append(Poison(stream, entry_id, f"malformed: {reason}", raw))
        self.size += len(ids) - before

    def rows(self, now: int, untag: bool = False) -> list[ExecutionRow]:
        """The merged rows' column values (``now``: epoch microseconds, their ``updated_at``; ``untag``:
        records of a Redis Cluster, see :func:`sql_values`)."""
        texts: dict[tuple[Any, ...], tuple[str | None, ...]] = {}
        return [sql_values(row, now, texts, untag) for row in self.executions.values()]

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


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _fields(raw: Any) -> dict[bytes, Any] | None:
    """The row fields of a lifecycle entry given as ``[field, value, ...]`` or ``{field: value}`` (text
    or bytes; packed, or one stream field per field): bytes values by tag (free text by name); ``None``
    for an entry without fields (trimmed after delivery)."""
    if not raw:
        return None
    if isinstance(raw, dict):
        pairs = [(_b(k), _b(v)) for k, v in raw.items()]
    else:
        it = iter(raw)
        pairs = [(_b(k), _b(v)) for k, v in zip(it, it, strict=False)]
    out: dict[bytes, Any] = {}
    for name, value in pairs:
        if name == _PACKED:
            it = iter(value.split(_SEP))
            for tag, part in zip(it, it, strict=False):
                out.setdefault(tag, part)
        else:
            out[_TAG_OF.get(name, name)] = value
    return out
