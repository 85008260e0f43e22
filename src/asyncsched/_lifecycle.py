"""Job lifecycle records: the one feed from the queue and worker to the history recorder and the event bus.

Whoever changes a job's state (``TaskQueue`` on enqueue/cancel, the worker on start/finish/fail/retry)
appends one record to the Redis STREAM :func:`asyncsched._keys.lifecycle_stream` **in the same
pipeline/script as the state change**, capped ``MAXLEN ~ settings.lifecycle_maxlen`` (a hard bound for long
outages only: the Recorder trims the stream below what every group acknowledged, and counts whatever the
cap drops unread). Two consumer groups read it:

* ``recorder`` — writes :class:`~asyncsched.store.models.TaskExecution` rows in batches (upsert by
  ``(job_id, attempt)``), XACKs only after the commit. While the database is down the records wait in the
  stream: bounded, in Redis, nothing lost or duplicated.
* ``events`` — publishes ``task.queued``, ``task.started``, ``task.completed``, ``task.failed``,
  ``task.cancelled``, ``task.skipped`` on the event bus (see :data:`EVENT_TYPES`).

The worker never waits on SQL or on event delivery. Records of one job may be consumed out of order across
batches; consumers merge by :data:`RANK` so a later state is never overwritten by an earlier one.

**The record's format** (``docs/store.md``, "The lifecycle record format"). A record is packed: one stream
field ``L`` holds its short fields as ``tag US value US tag US value ...`` (``US`` = ``"\x1f"``, the tags
in :data:`TAGS`), and the free text (``result``, ``error``, ``traceback``, ``progress``) follows in fields
of its own; a value holding ``US`` goes in a field of its own too, under its full name. Redis and its
client then handle 2-4 objects a record instead of 12-20, and a reader splits the packed field with one
call. Records written before the packed format (one stream field per field, full names) are read as
well: every reader accepts both, :meth:`LifecycleRecord.decode` and :func:`unpack`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "EVENT_TYPES",
    "LIFECYCLE_MAXLEN",
    "PACKED",
    "RANK",
    "RESULT_CAP",
    "SEP",
    "TAGS",
    "Lifecycle",
    "LifecycleRecord",
    "cap_result",
    "pack",
    "unpack",
]

LIFECYCLE_MAXLEN = 1_000_000
"""Default of ``Settings.lifecycle_maxlen`` (``ASYNCSCHED_LIFECYCLE_MAXLEN``): the stream's hard bound."""

RESULT_CAP = 16_384
"""Results larger than this (as JSON text) are recorded as a truncated preview."""

PACKED = "L"
"""The stream field of a packed record: its short fields as ``tag SEP value SEP ...``."""
SEP = "\x1f"
"""The separator of a packed record (ASCII unit separator). A value holding it is never packed."""
TAGS: Mapping[str, str] = {
    "kind": "k",
    "job_id": "j",
    "queue": "q",
    "attempt": "a",
    "worker": "w",
    "enqueued_at": "e",
    "started_at": "s",
    "ended_at": "d",
    "function": "f",
    "agent_name": "g",
    "task_name": "t",
    "scheduled_task_id": "c",
    "progress_at": "p",
}
"""The tag of each short field in a packed record (``lib_life.lua`` spells the same). The free text
fields (``result``, ``error``, ``traceback``, ``progress``) are never packed."""
_NAMES = {tag: name for name, tag in TAGS.items()}


class Lifecycle(enum.StrEnum):
    """What happened to the job. ``RETRY`` is a failed attempt that will run again."""

    SCHEDULED = "scheduled"
    DEFERRED = "deferred"
    QUEUED = "queued"
    STARTED = "started"
    SUCCESS = "success"
    FAILED = "failed"
    RETRY = "retry"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    """A scheduled tick that did not run: its task's previous run was still queued or running
    (``overlap: skip``). ``error`` says why; the job id is the one the tick would have had."""
    PROGRESS = "progress"
    """A running job reported progress (``current_job().progress()``): ``progress`` (JSON text) and
    ``progress_at``. Recorded on the execution row; publishes nothing (the worker publishes
    ``task.progress`` itself)."""


RANK: Mapping[Lifecycle, int] = {
    Lifecycle.SCHEDULED: 0,
    Lifecycle.DEFERRED: 0,
    Lifecycle.QUEUED: 1,
    Lifecycle.STARTED: 2,
    Lifecycle.SUCCESS: 3,
    Lifecycle.FAILED: 3,
    Lifecycle.RETRY: 3,
    Lifecycle.CANCELLED: 4,
    Lifecycle.SKIPPED: 4,
    Lifecycle.PROGRESS: 2,
}
"""Merge order: a record of lower rank never overwrites a stored state of higher rank (same attempt)."""

EVENT_TYPES: Mapping[Lifecycle, str] = {
    Lifecycle.QUEUED: "task.queued",
    Lifecycle.STARTED: "task.started",
    Lifecycle.SUCCESS: "task.completed",
    Lifecycle.FAILED: "task.failed",
    Lifecycle.RETRY: "task.failed",
    Lifecycle.CANCELLED: "task.cancelled",
    Lifecycle.SKIPPED: "task.skipped",
}
"""Event bus type published for each lifecycle kind (scheduled/deferred publish nothing)."""


@dataclass(frozen=True, slots=True)
class LifecycleRecord:
    """One state change of one attempt of one job. Times are float epoch seconds (UTC)."""

    kind: Lifecycle
    job_id: str
    queue: str
    """The queue's name as users see it (untagged on a Redis Cluster)."""
    attempt: int = 1
    """1 for the first run of the job id; a retry or a rerun of a scheduled rq-scheduler job counts up."""
    agent_name: str | None = None
    task_name: str | None = None
    function: str | None = None
    """The function path the job runs (``module:attr`` or RQ's dotted form)."""
    scheduled_task_id: str | None = None
    """The scheduled task this run is a tick of, if any."""
    worker: str | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    result: str | None = None
    """JSON text of the return value, capped at ``RESULT_CAP``."""
    error: str | None = None
    """One line: ``ExceptionType: message``."""
    traceback: str | None = None
    progress: str | None = None
    """JSON text of the latest progress report (``PROGRESS`` records)."""
    progress_at: float | None = None

    def encode(self) -> dict[str, str]:
        """Stream fields of the packed record (:func:`pack`): only the set ones, all as text."""
        flat = pack((f.name, getattr(self, f.name)) for f in fields(self))
        return dict(zip(flat[::2], flat[1::2], strict=True))

    @classmethod
    def decode(cls, raw: Mapping[bytes | str, bytes | str]) -> LifecycleRecord:
        """Inverse of :meth:`encode` (accepts the bytes redis-py returns, and records of either format)."""
        data = unpack(raw)
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value: Any = data[f.name]
            if f.name == "kind":
                value = Lifecycle(value)
            elif f.name == "attempt":
                value = int(value)
            elif f.name.endswith("_at"):
                value = float(value)
            kwargs[f.name] = value
        return cls(**kwargs)

    @property
    def event_type(self) -> str | None:
        """The event-bus type for this record, or ``None`` when nothing is published."""
        return EVENT_TYPES.get(self.kind)


def pack(items: Iterable[tuple[str, object]]) -> list[str]:
    """The XADD field/value list of a record given as ``(field name, value)`` pairs (``None``: not set):
    ``[PACKED, packed, name, value, ...]`` (free text, and any value holding :data:`SEP`, after it)."""
    packed: list[str] = []
    rest: list[str] = []
    for name, value in items:
        if value is None:
            continue
        text = str(value)
        tag = TAGS.get(name)
        if tag is not None and SEP not in text:
            packed += (tag, text)
        else:
            rest += (name, text)
    return [PACKED, SEP.join(packed), *rest]


def unpack(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A record's fields by full name, as text, from its stream fields in either format (packed, or one
    stream field per field). Undecodable bytes become U+FFFD."""
    out: dict[str, str] = {}
    for key, value in raw.items():
        name = key.decode(errors="replace") if isinstance(key, bytes) else key
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if name != PACKED:
            out[name] = text
            continue
        parts = text.split(SEP)
        if len(parts) % 2:
            raise ValueError(f"packed record with an odd number of parts ({len(parts)})")
        for tag, part in zip(parts[::2], parts[1::2], strict=True):
            out.setdefault(_NAMES.get(tag, tag), part)
    return out


def cap_result(value: object) -> str | None:
    """JSON text of ``value`` for the history, truncated to :data:`RESULT_CAP`; repr when not JSON-able."""
    if value is None:
        return None
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = json.dumps(repr(value))
    if len(text) > RESULT_CAP:
        text = json.dumps({"truncated": True, "preview": text[: RESULT_CAP - 64]})
    return text
