"""The SQL side of the history: bulk upserts of execution rows and inserts of event-log rows.

One statement per batch and table, whatever the batch size:

* PostgreSQL (asyncpg): ``INSERT ... SELECT FROM unnest($1::varchar[], ...) ON CONFLICT DO UPDATE`` — one
  round trip and one plan for thousands of rows;
* SQLite: ``INSERT ... VALUES (?, ...) ON CONFLICT DO UPDATE`` through the driver's ``executemany`` (C).

Both are driver-level statements (no per-row ORM or type processing), so values are typed here: times come
as float epoch seconds and are sent as integer microseconds (PostgreSQL) or SQLAlchemy's SQLite text form,
results as JSON text. The conflict clause
is the merge rule of :mod:`asyncsched.store._history_rows` applied against the stored row, with one more
status, ``unknown`` (set by the reconciler when a job's records were lost): it ranks above ``running`` and
below the outcomes, so a late outcome still replaces it (and its reason), a late start does not.

Rows of one statement must have distinct ``(job_id, attempt)`` (the batch merged them). Rows are written in
key order, so concurrent batches lock shared rows in the same order and cannot deadlock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from .models import EventMessage, ExecutionStatus, TaskExecution

__all__ = ["STATUS_RANK", "fix_durations", "insert_events", "mark_unknown", "upsert_executions"]

STATUS_RANK = {
    ExecutionStatus.SCHEDULED.value: 0,
    ExecutionStatus.DEFERRED.value: 0,
    ExecutionStatus.QUEUED.value: 10,
    ExecutionStatus.RUNNING.value: 20,
    ExecutionStatus.UNKNOWN.value: 25,
    ExecutionStatus.SUCCESS.value: 30,
    ExecutionStatus.FAILED.value: 30,
    ExecutionStatus.CANCELLED.value: 40,
    ExecutionStatus.SKIPPED.value: 40,
}
"""Merge order of stored statuses (``unknown`` between running and the outcomes)."""

EXEC = str(TaskExecution.__tablename__)
EVENTS = str(EventMessage.__tablename__)
TASKS = "asyncsched_scheduled_tasks"

COLUMNS = (
    "id", "job_id", "attempt", "status", "scheduled_task_id", "agent_name", "task_name", "function",
    "queue", "worker_name", "enqueued_at", "started_at", "ended_at", "duration", "result", "error",
    "traceback", "created_at", "updated_at",
)  # fmt: skip
_SENT = COLUMNS[1:]  # every column but the id, which the database makes
_MERGED = (
    "agent_name", "task_name", "function", "queue", "worker_name", "enqueued_at", "started_at",
    "ended_at", "duration", "result", "traceback",
)  # fmt: skip
_TIMES = ("enqueued_at", "started_at", "ended_at", "created_at", "updated_at")
_PG_TYPES = {
    "attempt": "int", "duration": "float8", "result": "text", "error": "text", "traceback": "text",
    **dict.fromkeys(_TIMES, "int8"),  # epoch microseconds: exact, and cheaper to send than timestamps
}  # fmt: skip


def _rank(expr: str) -> str:
    whens = " ".join(f"WHEN '{status}' THEN {rank}" for status, rank in STATUS_RANK.items())
    return f"(CASE {expr} {whens} ELSE -1 END)"


def _set_clause(old: str) -> str:
    new_rank, old_rank = _rank("excluded.status"), _rank(f"{old}.status")
    wins = f"{new_rank} >= {old_rank}"
    sets = [
        f"status = CASE WHEN {new_rank} > {old_rank} THEN excluded.status ELSE {old}.status END",
        f"created_at = CASE WHEN excluded.created_at < {old}.created_at THEN excluded.created_at "
        f"ELSE {old}.created_at END",
        "updated_at = excluded.updated_at",
        # the FK holds only for tasks that exist: a stored link is kept, a new one only if valid
        f"scheduled_task_id = COALESCE({old}.scheduled_task_id, excluded.scheduled_task_id)",
        # the reason of an 'unknown' row goes when a real outcome arrives
        f"error = CASE WHEN {old}.status = 'unknown' AND {new_rank} > {old_rank} THEN excluded.error "
        f"WHEN {wins} THEN COALESCE(excluded.error, {old}.error) "
        f"ELSE COALESCE({old}.error, excluded.error) END",
    ]
    sets.extend(
        f"{name} = CASE WHEN {wins} THEN COALESCE(excluded.{name}, {old}.{name}) "
        f"ELSE COALESCE({old}.{name}, excluded.{name}) END"
        for name in _MERGED
    )
    return ", ".join(sets)


def _pg_upsert() -> str:
    casts = ", ".join(f"${i + 1}::{_PG_TYPES.get(c, 'varchar')}[]" for i, c in enumerate(_SENT))

    def column(c: str) -> str:
        if c == "scheduled_task_id":
            return f"(SELECT s.id FROM {TASKS} s WHERE s.id = u.{c})"
        if c == "result":
            return "u.result::json"
        if c in _TIMES:
            return f"'epoch'::timestamptz + u.{c} * interval '1 microsecond'"
        if c == "id":  # made by the database: one array less to build and send
            return "replace(gen_random_uuid()::text, '-', '')"
        return f"u.{c}"

    select = ", ".join(column(c) for c in COLUMNS)
    return (
        f"INSERT INTO {EXEC} AS t ({', '.join(COLUMNS)}) SELECT {select} "
        f"FROM unnest({casts}) AS u({', '.join(_SENT)}) "
        f"ON CONFLICT (job_id, attempt) DO UPDATE SET {_set_clause('t')}"
    )


def _sqlite_upsert() -> str:
    def mark(c: str) -> str:
        if c == "scheduled_task_id":
            return f"(SELECT id FROM {TASKS} WHERE id = ?)"
        return "lower(hex(randomblob(16)))" if c == "id" else "?"

    marks = ", ".join(mark(c) for c in COLUMNS)
    return (
        f"INSERT INTO {EXEC} ({', '.join(COLUMNS)}) VALUES ({marks}) "
        f"ON CONFLICT (job_id, attempt) DO UPDATE SET {_set_clause(EXEC)}"
    )


_PG_UPSERT = _pg_upsert()
_SQLITE_UPSERT = _sqlite_upsert()


def _micros(value: float | None) -> int | None:
    """Epoch seconds as integer microseconds, rounded exactly as ``datetime.fromtimestamp`` rounds."""
    if value is None:
        return None
    whole = math.floor(value)
    return whole * 1_000_000 + round((value - whole) * 1e6)


_EPOCH = datetime(1970, 1, 1)


def _sqlite_time(value: float | None) -> str | None:
    # SQLAlchemy's SQLite DateTime text form, naive UTC (what UTCDateTime stores and reads back)
    micros = _micros(value)
    return (
        None if micros is None else (_EPOCH + timedelta(microseconds=micros)).isoformat(" ", "microseconds")
    )


_TIME_SET = frozenset(_TIMES)


async def upsert_executions(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Merge ``rows`` (``Row.sql_values`` dicts, distinct keys) into the executions table: one statement."""
    if not rows:
        return
    ordered = sorted(rows, key=lambda r: (r["job_id"], r["attempt"]))
    if conn.dialect.name == "postgresql":
        arrays = tuple(
            [_micros(r[c]) for r in ordered] if c in _TIME_SET else [r[c] for r in ordered] for c in _SENT
        )
        await conn.exec_driver_sql(_PG_UPSERT, arrays)
    else:
        params = [tuple(_sqlite_time(r[c]) if c in _TIME_SET else r[c] for c in _SENT) for r in ordered]
        await conn.exec_driver_sql(_SQLITE_UPSERT, params)
    await fix_durations(conn, [r for r in ordered if r["ended_at"] is not None and r["started_at"] is None])


async def fix_durations(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """``duration`` of rows whose start and end came in different batches (rare: an outcome record
    carries its start), computed in Python from the stored times: exact on both databases."""
    if not rows:
        return
    from sqlalchemy import and_, bindparam, or_, select, update

    t = TaskExecution
    keys = [and_(t.job_id == r["job_id"], t.attempt == r["attempt"]) for r in rows]
    query = select(t.id, t.started_at, t.ended_at, t.duration).where(or_(*keys))
    fixes = []
    for row_id, started, ended, duration in (await conn.execute(query)).all():
        if started is not None and ended is not None:
            exact = max(0.0, (ended - started).total_seconds())
            if duration is None or abs(duration - exact) > 1e-6:
                fixes.append({"b_id": row_id, "b_duration": exact})
    if fixes:
        table: Any = TaskExecution.__table__
        stmt = update(table).where(table.c.id == bindparam("b_id")).values(duration=bindparam("b_duration"))
        await conn.execute(stmt, fixes)


async def insert_events(conn: AsyncConnection, events: Sequence[dict[str, Any]]) -> None:
    """Insert event-log rows; an id already stored is ignored."""
    if not events:
        return
    from sqlalchemy.dialects import postgresql, sqlite

    table: Any = EventMessage.__table__
    dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    await conn.execute(
        dialect.insert(table).on_conflict_do_nothing(index_elements=[table.c.id]), list(events)
    )


async def mark_unknown(
    conn: AsyncConnection, keys: Sequence[tuple[str, int, str]], now: datetime, statuses: Sequence[str]
) -> int:
    """Set ``unknown`` with a reason on the rows ``(job_id, attempt, reason)`` still in ``statuses``;
    returns how many rows changed (one statement per distinct reason)."""
    from sqlalchemy import tuple_, update

    table: Any = TaskExecution.__table__
    by_reason: dict[str, list[tuple[str, int]]] = {}
    for job, attempt, reason in keys:
        by_reason.setdefault(reason, []).append((job, attempt))
    changed = 0
    for reason, pairs in by_reason.items():
        for start in range(0, len(pairs), 500):
            stmt = (
                update(table)
                .where(
                    tuple_(table.c.job_id, table.c.attempt).in_(pairs[start : start + 500]),
                    table.c.status.in_(list(statuses)),
                )
                .values(status=ExecutionStatus.UNKNOWN.value, error=reason, updated_at=now)
            )
            result = await conn.execute(stmt)
            changed += max(0, int(getattr(result, "rowcount", 0) or 0))
    return changed
