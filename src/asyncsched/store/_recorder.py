"""The Recorder: job lifecycle records and published events, written to SQL in batches, off the hot path.

It reads two Redis streams with the consumer group ``recorder``:

* :func:`asyncsched._keys.lifecycle_stream` — :class:`~asyncsched._lifecycle.LifecycleRecord` entries,
  merged into one :class:`~asyncsched.store.models.TaskExecution` row per ``(job_id, attempt)``;
* :func:`asyncsched._keys.event_log_stream` — event envelopes, inserted as
  :class:`~asyncsched.store.models.EventMessage` rows (an id already stored is ignored).

One cycle reads up to ``batch_size`` entries (this consumer's pending entries first, then new ones), writes
them in ONE transaction and XACKs them only after the commit. If the database fails, nothing is acked: the
entries stay pending in Redis, the Recorder backs off (exponentially, capped at ``max_backoff``) and retries
the same entries until the database answers. The writes are idempotent merges, so an entry written twice (a
commit whose XACK was lost) changes nothing. Producers never wait on any of this.

Merge rule (the same in Python inside a batch and in SQL against the stored row): the status moves only to a
strictly higher :data:`~asyncsched._lifecycle.RANK`; other fields from a record of higher or equal rank
replace stored ones, from a lower rank they only fill what is missing; ``created_at`` keeps the earliest
time; ``duration`` is ``ended_at - started_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from sqlalchemy import Table, bindparam, case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import _keys
from .._lifecycle import RANK, RESULT_CAP, Lifecycle, LifecycleRecord
from .._redis import create_redis
from ..config import Settings, get_settings
from ..events._poison import report_malformed
from ._database import Database
from ._repository import prune
from .models import EventMessage, ExecutionStatus, ScheduledTask, TaskExecution, _uuid, utcnow

__all__ = ["GROUP", "STATUS_OF", "Recorder"]

log = logging.getLogger("asyncsched.store.recorder")

GROUP = "recorder"
"""Consumer group of the Recorder on both streams."""

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

_STATUS_RANK: Mapping[str, int] = {STATUS_OF[kind].value: rank for kind, rank in RANK.items()}

_MERGED = (
    "scheduled_task_id",
    "agent_name",
    "task_name",
    "function",
    "queue",
    "worker_name",
    "enqueued_at",
    "started_at",
    "ended_at",
    "duration",
    "result",
    "error",
    "traceback",
)
"""Columns merged by rank (see the module docstring)."""

_CLIPPED = ("job_id", "scheduled_task_id", "agent_name", "task_name", "function", "queue", "worker_name")
_TRACEBACK_CAP = 65_536
_POISON_AFTER = 3  # failures of one batch, with the database answering, before rows are tried one by one


def _limit(column: str, table: Any) -> int | None:
    length: int | None = getattr(table.c[column].type, "length", None)
    return length


def _clip(value: str | None, length: int | None) -> str | None:
    """Fit a text column: without NUL characters (PostgreSQL refuses them) and cut to ``length``."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "")
    if length is None or len(value) <= length:
        return value
    return value[:length]


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _entry_time(entry_id: str) -> datetime:
    return datetime.fromtimestamp(int(entry_id.split("-", 1)[0]) / 1000, UTC)


def _result(raw: str | None) -> Any:
    if raw is None:
        return None
    if len(raw) > RESULT_CAP:
        return {"truncated": True, "preview": raw[: RESULT_CAP - 64]}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to parse: kept as text
        return raw


def _text(value: bytes | str) -> str:
    # Undecodable bytes (garbage XADDed by hand) must not make an entry unskippable: they become U+FFFD.
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass
class _Row:
    """One execution being merged inside a batch."""

    values: dict[str, Any]
    rank: int = -1

    def apply(self, record: LifecycleRecord, seen_at: datetime) -> None:
        rank = RANK[record.kind]
        if rank > self.rank:
            self.values["status"] = STATUS_OF[record.kind].value
            self.rank = rank
        incoming = {
            "scheduled_task_id": record.scheduled_task_id,
            "agent_name": record.agent_name,
            "task_name": record.task_name,
            "function": record.function,
            "queue": record.queue,
            "worker_name": record.worker,
            "enqueued_at": _ts(record.enqueued_at),
            "started_at": _ts(record.started_at),
            "ended_at": _ts(record.ended_at),
            "result": _result(record.result),
            "error": _clip(record.error, None),
            "traceback": _clip(record.traceback, _TRACEBACK_CAP),
        }
        wins = rank >= self.rank
        for name, value in incoming.items():
            if value is not None and (wins or self.values.get(name) is None):
                self.values[name] = value
        times = [t for t in (seen_at, incoming["enqueued_at"], incoming["started_at"]) if t is not None]
        earliest = min(times)
        if self.values.get("created_at") is None or earliest < self.values["created_at"]:
            self.values["created_at"] = earliest
        started, ended = self.values.get("started_at"), self.values.get("ended_at")
        if started is not None and ended is not None:
            self.values["duration"] = max(0.0, (ended - started).total_seconds())


@dataclass
class _Batch:
    """Entries of one cycle, decoded, with the ids to acknowledge per stream."""

    executions: dict[tuple[str, int], _Row] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    ack: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(ids) for ids in self.ack.values())


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
        "id": _clip(str(data["id"]), _limit("id", table)),
        "event_type": _clip(str(data["event_type"]), _limit("event_type", table)),
        "source_agent": _clip(str(data["source_agent"]), _limit("source_agent", table)),
        "target_agent": _clip(data.get("target_agent") or None, _limit("target_agent", table)),
        "payload": payload,
        "created_at": _parse_time(str(created)) if created else utcnow(),
    }


class Recorder:
    """Writes execution history and the event log to SQL from Redis streams, in batches (async CM).

    ``async with Recorder(redis, db=db):`` runs the loop in a task until the block exits; leaving it
    writes what is already in the streams (one last drain, if the database answers) and stops.
    ``await recorder.flush()`` writes everything readable now and returns how many entries it handled.

    ``flush_interval`` bounds how long the loop waits on an empty stream before it looks again (and how
    long leaving takes); entries are written as soon as they are read, up to ``batch_size`` at a time, so
    under load the batches fill by themselves. ``retention`` (``True``: ``settings.retention_days``, where
    0 keeps everything; a ``timedelta``; ``False``/``None``: keep everything) is applied on start and
    every ``prune_interval`` seconds. ``consumer`` (default: the host name) names this reader in the
    group; a restart under the same name writes what it had read but not acknowledged.
    """

    def __init__(
        self,
        redis: str | aioredis.Redis | None = None,
        *,
        db: Database,
        settings: Settings | None = None,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        consumer: str | None = None,
        events: bool = True,
        retention: timedelta | bool | None = True,
        prune_interval: float = 3600.0,
        claim_idle: float = 60.0,
        max_backoff: float = 5.0,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.settings = settings or get_settings()
        self.db = db
        if isinstance(redis, aioredis.Redis):
            self.redis = redis
            self._owns_redis = False
        else:
            self.redis = create_redis(redis or self.settings.redis_url)
            self._owns_redis = True
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.consumer = consumer or socket.gethostname()
        self.lifecycle_stream = _keys.lifecycle_stream(self.settings.key_prefix)
        self.event_stream = _keys.event_log_stream(self.settings.key_prefix)
        self.streams = [self.lifecycle_stream] + ([self.event_stream] if events else [])
        if retention is True:
            days = self.settings.retention_days
            self.retention: timedelta | None = timedelta(days=days) if days > 0 else None
        else:
            self.retention = retention or None
        self.prune_interval = prune_interval
        self.claim_idle = claim_idle
        self.max_backoff = max_backoff
        self.recorded = 0
        """Entries written (and acknowledged) since this Recorder was created."""
        self.failures = 0
        """Failed write attempts (each is retried)."""
        self.last_error: BaseException | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._groups_ready = False
        self._next_claim = 0.0
        self._next_prune = 0.0
        self._failing = False
        self._batch_failures = 0
        self._upsert_stmt: Any = None

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> Recorder:
        self._stopping.clear()
        with contextlib.suppress(Exception):  # Redis may be down: the loop keeps trying
            await self._ensure_groups()
        self._task = asyncio.create_task(self._run(), name=f"asyncsched-recorder-{self.consumer}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout=self.flush_interval + 30.0)
            except TimeoutError:
                log.warning("recorder did not finish its last drain in time; entries stay pending in Redis")
        if self._owns_redis:
            await self.redis.aclose()

    async def _run(self) -> None:
        backoff = 0.0
        block_ms = max(1, int(self.flush_interval * 1000))
        while not self._stopping.is_set():
            try:
                async with self._lock:
                    await self._cycle(block_ms)
                await self._maybe_prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                backoff = min(self.max_backoff, backoff * 2 if backoff else 0.05)
                self._failed(exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                continue
            backoff = 0.0
        with contextlib.suppress(Exception):  # last drain; on failure entries stay pending, not lost
            await self.flush()

    def _failed(self, exc: BaseException, backoff: float) -> None:
        self.failures += 1
        self.last_error = exc
        if not self._failing:
            log.warning(
                "recorder cannot record history (%s: %s); entries stay in Redis, retrying",
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            self._failing = True
        else:
            log.debug("recorder retry failed (%s); next try in %.2fs", exc, backoff)

    async def flush(self) -> int:
        """Write everything readable now (pending and new entries, no waiting); return how many entries."""
        total = 0
        while True:
            async with self._lock:
                n = await self._cycle(None)
            total += n
            if n == 0:
                return total

    # ------------------------------------------------------------------ one cycle

    async def _ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    async def _read(self, ids: str, block_ms: int | None) -> list[tuple[str, str, Any]]:
        try:
            reply = await self.redis.xreadgroup(
                GROUP, self.consumer, dict.fromkeys(self.streams, ids), count=self.batch_size, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_groups()  # the stream or group was deleted (Redis restarted empty, FLUSHALL)
            return []
        items: Any = reply.items() if isinstance(reply, dict) else (reply or [])
        out: list[tuple[str, str, Any]] = []
        for stream, entries in items:
            name = _text(stream)
            if isinstance(entries, list) and len(entries) == 1 and isinstance(entries[0], list):
                entries = entries[0]  # RESP3 wraps entries once more
            for entry_id, fields in entries or []:
                out.append((name, _text(entry_id), fields))
        return out

    async def _claim(self) -> None:
        """Take over entries another consumer read but never acknowledged (it died) after ``claim_idle``."""
        for stream in self.streams:
            with contextlib.suppress(ResponseError):
                await self.redis.xautoclaim(
                    stream,
                    GROUP,
                    self.consumer,
                    min_idle_time=int(self.claim_idle * 1000),
                    start_id="0-0",
                    count=self.batch_size,
                    justid=True,
                )

    async def _cycle(self, block_ms: int | None) -> int:
        if not self._groups_ready:
            await self._ensure_groups()
        now = time.monotonic()
        if now >= self._next_claim:
            await self._claim()
            self._next_claim = now + max(1.0, self.claim_idle / 2)
        entries = await self._read("0", None)  # our own pending entries first: a failed batch, a restart
        if not entries:
            entries = await self._read(">", block_ms)
        if not entries:
            return 0
        batch = self._decode(entries)
        await self._write(batch)
        for stream, ids in batch.ack.items():
            if ids:
                await self.redis.xack(stream, GROUP, *ids)
        self.recorded += len(batch)
        if self._failing:
            log.info("recorder writes again; the pending history is recorded")
            self._failing = False
        return len(batch)

    def _decode(self, entries: Sequence[tuple[str, str, Any]]) -> _Batch:
        batch = _Batch()
        for stream, entry_id, raw in entries:
            batch.ack.setdefault(stream, []).append(entry_id)
            if not raw:
                log.error("history entry %s of %s was trimmed before it was recorded", entry_id, stream)
                continue
            fields = {_text(k): _text(v) for k, v in raw.items()}
            try:
                if stream == self.lifecycle_stream:
                    record = LifecycleRecord.decode(raw)
                    key = (record.job_id, record.attempt)
                    row = batch.executions.get(key)
                    if row is None:
                        row = batch.executions[key] = _Row(
                            {"job_id": record.job_id, "attempt": record.attempt}
                        )
                    row.apply(record, _entry_time(entry_id))
                else:
                    event = decode_event(fields)
                    batch.events.setdefault(event["id"], event)
            except Exception as exc:  # any entry, however broken, is skipped on its own
                where = f"{stream} (entry {entry_id})"
                report_malformed("history entry", where, f"{type(exc).__name__}: {exc}", fields)
        return batch

    # ------------------------------------------------------------------ SQL

    async def _write(self, batch: _Batch) -> None:
        rows = [self._execution_values(row) for _, row in sorted(batch.executions.items())]
        events = list(batch.events.values())
        if not rows and not events:
            return
        try:
            async with self.db.engine.begin() as conn:
                await self._upsert(conn, rows)
                await self._insert_events(conn, events)
        except (IntegrityError, DataError) as exc:
            log.error("history batch refused (%s); writing it row by row", exc)
            await self._isolate(rows, events)
        except Exception:
            # Usually an outage: raise, keep the entries pending, retry. But if the same batch keeps
            # failing while the database answers, one row in it is refused: find it and drop it alone.
            self._batch_failures += 1
            if self._batch_failures < _POISON_AFTER or not await self._database_answers():
                raise
            log.error(
                "history batch failed %d times while the database answers; writing row by row",
                self._batch_failures,
            )
            await self._isolate(rows, events)
        self._batch_failures = 0

    async def _database_answers(self) -> bool:
        """Whether the database accepts an ordinary write to both tables (probe rows, rolled back).

        Tells a refused row apart from a refused batch: a database that is down, read-only, full, or
        lacks the tables (not migrated) fails the probe too, so nothing is dropped for those.
        """
        now = utcnow()
        try:
            async with self.db.engine.connect() as conn:
                trans = await conn.begin()
                try:
                    await conn.execute(
                        insert(TaskExecution).values(
                            id=_uuid(), job_id=f"probe-{_uuid()}", queue="probe", status="queued",
                            attempt=1, created_at=now, updated_at=now,
                        )
                    )  # fmt: skip
                    await conn.execute(
                        insert(EventMessage).values(
                            id=_uuid(), event_type="probe", source_agent="probe", payload={}, created_at=now
                        )
                    )
                finally:
                    await trans.rollback()
        except Exception:
            return False
        return True

    async def _isolate(self, rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        """Write one row per transaction; drop (and log) the rows refused while the database answers."""
        for row in rows:
            try:
                async with self.db.engine.begin() as conn:
                    await self._upsert(conn, [row])
            except Exception as exc:
                if not await self._database_answers():
                    raise  # an outage after all: everything stays pending (rewriting is idempotent)
                log.error(
                    "dropping execution %s#%s the database refuses: %s", row["job_id"], row["attempt"], exc
                )
        for event in events:
            try:
                async with self.db.engine.begin() as conn:
                    await self._insert_events(conn, [event])
            except Exception as exc:
                if not await self._database_answers():
                    raise
                log.error("dropping event %s the database refuses: %s", event["id"], exc)

    def _execution_values(self, row: _Row) -> dict[str, Any]:
        table = TaskExecution.__table__
        values: dict[str, Any] = dict.fromkeys(_MERGED)
        values.update(row.values)
        for name in (
            "job_id",
            "scheduled_task_id",
            "agent_name",
            "task_name",
            "function",
            "queue",
            "worker_name",
        ):
            values[name] = _clip(values[name], _limit(name, table))
        values["queue"] = values["queue"] or "default"
        values.setdefault("status", ExecutionStatus.QUEUED.value)
        values["id"] = _uuid()
        values["created_at"] = values.get("created_at") or utcnow()
        values["updated_at"] = utcnow()
        return values

    def _insert(self, table: Table) -> Any:
        if self.db.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def _upsert(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        task_ids = {r["scheduled_task_id"] for r in rows if r["scheduled_task_id"]}
        if task_ids:  # the FK holds only for tasks that exist (ad-hoc ids or deleted tasks are dropped)
            found = set(
                (await conn.scalars(select(ScheduledTask.id).where(ScheduledTask.id.in_(task_ids)))).all()
            )
            for r in rows:
                if r["scheduled_task_id"] not in found:
                    r["scheduled_task_id"] = None
        table: Table = TaskExecution.__table__  # type: ignore[assignment]
        t = table.c
        # executemany: SQLAlchemy sends it as multi-row INSERT ... ON CONFLICT ... RETURNING statements
        # ("insertmanyvalues"), and the statement is compiled once and cached.
        result = await conn.execute(self._upsert_statement(), rows)
        fixes = []
        for row_id, started, ended, duration in result.all():
            if started is not None and ended is not None:
                exact = max(0.0, (ended - started).total_seconds())
                if duration is None or abs(duration - exact) > 1e-6:
                    fixes.append({"b_id": row_id, "b_duration": exact})
        if fixes:  # start and end arrived in different batches
            fix = update(table).where(t.id == bindparam("b_id")).values(duration=bindparam("b_duration"))
            await conn.execute(fix, fixes)

    def _upsert_statement(self) -> Any:
        if self._upsert_stmt is None:
            table: Table = TaskExecution.__table__  # type: ignore[assignment]
            t = table.c
            stmt = self._insert(table)
            new = stmt.excluded
            old_rank = case(_STATUS_RANK, value=t.status, else_=-1)
            new_rank = case(_STATUS_RANK, value=new.status, else_=-1)
            set_: dict[str, Any] = {
                "status": case((new_rank > old_rank, new.status), else_=t.status),
                "created_at": case((new.created_at < t.created_at, new.created_at), else_=t.created_at),
                "updated_at": new.updated_at,
            }
            for name in _MERGED:
                set_[name] = case(
                    (new_rank >= old_rank, func.coalesce(new[name], t[name])),
                    else_=func.coalesce(t[name], new[name]),
                )
            self._upsert_stmt = stmt.on_conflict_do_update(
                index_elements=[t.job_id, t.attempt], set_=set_
            ).returning(t.id, t.started_at, t.ended_at, t.duration)
        return self._upsert_stmt

    async def _insert_events(self, conn: AsyncConnection, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        table: Table = EventMessage.__table__  # type: ignore[assignment]
        await conn.execute(self._insert(table).on_conflict_do_nothing(index_elements=[table.c.id]), events)

    # ------------------------------------------------------------------ retention and health

    async def _maybe_prune(self) -> None:
        if self.retention is None:
            return
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self.prune_interval
        result = await prune(self.db, self.retention)
        if result.executions or result.events:
            log.info(
                "retention: pruned %d executions and %d events older than %s",
                result.executions,
                result.events,
                self.retention,
            )

    async def backlog(self) -> dict[str, int]:
        """Entries not yet recorded, per stream: read but unacknowledged plus never read (Redis >= 7)."""
        out: dict[str, int] = {}
        for stream in self.streams:
            total = 0
            with contextlib.suppress(ResponseError):
                for group in await self.redis.xinfo_groups(stream):
                    info = {_text(k): v for k, v in group.items()}
                    if _text(info.get("name", b"")) == GROUP:
                        total = int(info.get("pending") or 0) + int(info.get("lag") or 0)
            out[stream] = total
        return out
