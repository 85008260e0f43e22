"""The SQL side of the history: bulk upserts of execution rows and inserts of event-log rows.

One statement per batch and table, whatever the batch size:

* PostgreSQL (asyncpg): ``INSERT ... SELECT FROM unnest($1::varchar[], ...) ON CONFLICT DO UPDATE`` — one
  round trip and one plan for thousands of rows;
* SQLite: ``INSERT ... VALUES (?, ...) ON CONFLICT DO UPDATE`` through the driver's ``executemany`` (C).

Both are driver-level statements (no per-row ORM or type processing), so values are typed here: timestamps
as aware datetimes (PostgreSQL) or SQLAlchemy's SQLite text form, results as JSON text. The conflict clause
is the merge rule of :mod:`asyncsched.store._history_rows` applied against the stored row, with one more
status, ``unknown`` (set by the reconciler when a job's records were lost): it ranks above ``running`` and
below the outcomes, so a late outcome still replaces it (and its reason), a late start does not.

Rows of one statement must have distinct ``(job_id, attempt)`` (the batch merged them). Rows are written in
key order, so concurrent batches lock shared rows in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
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
_MERGED = (
    "agent_name", "task_name", "function", "queue", "worker_name", "enqueued_at", "started_at",
    "ended_at", "duration", "result", "traceback",
)  # fmt: skip
_PG_TYPES = {
    "attempt": "int", "duration": "float8", "enqueued_at": "timestamptz", "started_at": "timestamptz",
    "ended_at": "timestamptz", "created_at": "timestamptz", "updated_at": "timestamptz", "result": "text",
    "error": "text", "traceback": "text",
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
        f"WHEN {wins} THEN COALESCE(excluded.error, {old}.error) ELSE COALESCE({old}.error, excluded.error) END",
    ]
    for name in _MERGED:
        sets.append(
            f"{name} = CASE WHEN {wins} THEN COALESCE(excluded.{name}, {old}.{name}) "
            f"ELSE COALESCE({old}.{name}, excluded.{name}) END"
        )
    return ", ".join(sets)


def _pg_upsert() -> str:
    casts = ", ".join(f"${i + 1}::{_PG_TYPES.get(c, 'varchar')}[]" for i, c in enumerate(COLUMNS))
    select = ", ".join(
        f"(SELECT s.id FROM {TASKS} s WHERE s.id = u.{c})"
        if c == "scheduled_task_id"
        else ("u.result::json" if c == "result" else f"u.{c}")
        for c in COLUMNS
    )
    return (
        f"INSERT INTO {EXEC} AS t ({', '.join(COLUMNS)}) SELECT {select} "
        f"FROM unnest({casts}) AS u({', '.join(COLUMNS)}) "
        f"ON CONFLICT (job_id, attempt) DO UPDATE SET {_set_clause('t')}"
    )


def _sqlite_upsert() -> str:
    marks = ", ".join(
        f"(SELECT id FROM {TASKS} WHERE id = ?)" if c == "scheduled_task_id" else "?" for c in COLUMNS
    )
    return (
        f"INSERT INTO {EXEC} ({', '.join(COLUMNS)}) VALUES ({marks}) "
        f"ON CONFLICT (job_id, attempt) DO UPDATE SET {_set_clause(EXEC)}"
    )


_PG_UPSERT = _pg_upsert()
_SQLITE_UPSERT = _sqlite_upsert()


def _sqlite_time(value: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DateTime text form, naive UTC (what UTCDateTime stores and reads back)
    return None if value is None else value.replace(tzinfo=None).isoformat(" ", "microseconds")


_SQLITE_TIMES = frozenset({"enqueued_at", "started_at", "ended_at", "created_at", "updated_at"})


async def upsert_executions(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Merge ``rows`` (``Row.sql_values`` dicts, distinct keys) into the executions table: one statement."""
    if not rows:
        return
    ordered = sorted(rows, key=lambda r: (r["job_id"], r["attempt"]))
    if conn.dialect.name == "postgresql":
        arrays = tuple([r[c] for r in ordered] for c in COLUMNS)
        await conn.exec_driver_sql(_PG_UPSERT, arrays)
    else:
        params = [
            tuple(_sqlite_time(r[c]) if c in _SQLITE_TIMES else r[c] for c in COLUMNS) for r in ordered
        ]
        await conn.exec_driver_sql(_SQLITE_UPSERT, params)
    await fix_durations(conn, [r for r in ordered if r["duration"] is None and (r["ended_at"] or r["started_at"])])


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
    await conn.execute(dialect.insert(table).on_conflict_do_nothing(index_elements=[table.c.id]), list(events))


async def mark_unknown(
    conn: AsyncConnection, keys: Sequence[tuple[str, int, str]], now: datetime, statuses: Sequence[str]
) -> int:
    """Set ``unknown`` with a reason on the rows ``(job_id, attempt, reason)`` still in ``statuses``."""
    if not keys:
        return 0
    from sqlalchemy import bindparam, update

    table: Any = TaskExecution.__table__
    stmt = (
        update(table)
        .where(
            table.c.job_id == bindparam("b_job"),
            table.c.attempt == bindparam("b_attempt"),
            table.c.status.in_(list(statuses)),
        )
        .values(status=ExecutionStatus.UNKNOWN.value, error=bindparam("b_reason"), updated_at=now)
    )
    result = await conn.execute(
        stmt, [{"b_job": job, "b_attempt": attempt, "b_reason": reason} for job, attempt, reason in keys]
    )
    return int(getattr(result, "rowcount", 0) or 0)
