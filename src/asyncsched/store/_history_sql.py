"""The SQL side of the history: bulk upserts of execution rows and inserts of event-log rows.

One merge per batch and table, whatever the batch size:

* PostgreSQL (asyncpg): the rows are sent by binary ``COPY`` into a temporary staging table (created once
  per connection, emptied at each commit), then merged by one ``INSERT ... SELECT ... ON CONFLICT DO
  UPDATE``: the driver encodes each value once in C, with no per-element checks of array parameters;
* SQLite: ``INSERT ... VALUES (?, ...) ON CONFLICT DO UPDATE`` through the driver's ``executemany`` (C).

Both are driver-level statements (no per-row ORM or type processing), so values are typed here
(:class:`~asyncsched.store._history_rows.ExecutionRow`): times are integer epoch microseconds, sent as they
are (PostgreSQL) or in SQLAlchemy's SQLite text form, results as JSON text. The conflict clause
is the merge rule of :mod:`asyncsched.store._history_rows` applied against the stored row, with one more
status, ``unknown`` (set by the reconciler when a job's records were lost): it ranks above ``running`` and
below the outcomes, so a late outcome still replaces it (and its reason), a late start does not.

Rows of one statement must have distinct ``(job_id, attempt)`` (the batch merged them). Rows are written in
key order (PostgreSQL: the merge's ``ORDER BY``; SQLite: sorted here), so concurrent batches lock shared
rows in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ._history_rows import ExecutionRow
from .models import EventMessage, ExecutionStatus, TaskExecution

__all__ = [
    "STATUS_RANK", "fix_durations", "insert_events", "mark_unknown", "sqlite_time", "upsert_executions",
]  # fmt: skip

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
    "traceback", "created_at", "updated_at", "progress", "progress_at",
)  # fmt: skip
_SENT = COLUMNS[1:]  # every column but the id, which the database makes: ExecutionRow's fields
assert ExecutionRow._fields == _SENT
_MERGED = (
    "agent_name", "task_name", "function", "queue", "worker_name", "enqueued_at", "started_at",
    "ended_at", "duration", "result", "traceback",
)  # fmt: skip
_TIMES = ("enqueued_at", "started_at", "ended_at", "created_at", "updated_at", "progress_at")
_PG_TYPES = {
    "attempt": "int", "duration": "float8",
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
    # progress: the latest report wins, whatever the status (a report may be recorded after the outcome)
    newer = (
        f"excluded.progress_at IS NOT NULL AND "
        f"({old}.progress_at IS NULL OR excluded.progress_at >= {old}.progress_at)"
    )
    sets.extend(
        f"{name} = CASE WHEN {newer} THEN excluded.{name} ELSE {old}.{name} END"
        for name in ("progress", "progress_at")
    )
    sets.extend(
        f"{name} = CASE WHEN {wins} THEN COALESCE(excluded.{name}, {old}.{name}) "
        f"ELSE COALESCE({old}.{name}, excluded.{name}) END"
        for name in _MERGED
    )
    return ", ".join(sets)


_STAGE = "asyncsched_stage_executions"
_PG_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ("
    + ", ".join(f"{c} {_PG_TYPES.get(c, 'text')}" for c in _SENT)
    + ") ON COMMIT DELETE ROWS"
)


def _pg_merge() -> str:
    def column(c: str) -> str:
        if c == "scheduled_task_id":
            return f"(SELECT s.id FROM {TASKS} s WHERE s.id = u.{c})"
        if c in ("result", "progress"):
            return f"u.{c}::json"
        if c in _TIMES:
            return f"'epoch'::timestamptz + u.{c} * interval '1 microsecond'"
        if c == "id":  # made by the database: one column less to send (see _ORDERED_ID)
            return "lpad(to_hex(u.created_at), 14, '0') || left(md5(u.job_id || '#' || u.attempt), 18)"
        return f"u.{c}"

    select = ", ".join(column(c) for c in COLUMNS)
    return (
        f"INSERT INTO {EXEC} AS t ({', '.join(COLUMNS)}) SELECT {select} "
        f"FROM {_STAGE} AS u ORDER BY u.job_id, u.attempt "
        f"ON CONFLICT (job_id, attempt) DO UPDATE SET {_set_clause('t')}"
    )


# _ORDERED_ID: an execution's id (32 hex digits) starts with its ``created_at`` in epoch microseconds (14
# digits, up to the year 4253), then 18 digits of a hash of its key (PostgreSQL) or random ones (SQLite):
# the ids of new rows come in time order, so the primary key index grows at its end instead of taking each
# insert at a random page (random ids cost SQLite ~8 us a row at 200,000 rows). Any unique text would do:
# an id is never derived again.


def _sqlite_upsert() -> str:
    def mark(c: str) -> str:
        if c == "scheduled_task_id":
            return f"(SELECT id FROM {TASKS} WHERE id = ?)"
        return "printf('%014x', ?) || lower(hex(randomblob(9)))" if c == "id" else "?"  # see _ORDERED_ID

    marks = ", ".join(mark(c) for c in COLUMNS)
    return (
        f"INSERT INTO {EXEC} ({', '.join(COLUMNS)}) VALUES ({marks}) "
        f"ON CONFLICT (job_id, attempt) DO UPDATE SET {_set_clause(EXEC)}"
    )


_PG_MERGE = _pg_merge()
_SQLITE_UPSERT = _sqlite_upsert()

_EPOCH = datetime(1970, 1, 1)
_SECONDS: dict[int, str] = {}  # "YYYY-MM-DD HH:MM:SS" of recent epoch seconds: times of a batch share them


def sqlite_time(value: int | None) -> str | None:
    """Epoch microseconds in SQLAlchemy's SQLite DateTime text form, naive UTC (what ``UTCDateTime``
    stores and reads back): ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if value is None:
        return None
    whole, frac = divmod(value, 1_000_000)
    head = _SECONDS.get(whole)
    if head is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        head = _SECONDS[whole] = (_EPOCH + timedelta(seconds=whole)).isoformat(" ")
    return f"{head}.{frac:06d}"


async def upsert_executions(conn: AsyncConnection, rows: Sequence[ExecutionRow]) -> None:
    """Merge ``rows`` (distinct ``(job_id, attempt)``) into the executions table.

    PostgreSQL: the rows are COPied (binary) into a temporary staging table, then merged by ONE
    ``INSERT ... SELECT ... ON CONFLICT`` (the staging table empties itself at commit). SQLite: one
    ``INSERT ... ON CONFLICT`` statement run by the driver for every row."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":  # (the merge takes the staged rows in key order itself)
        await conn.exec_driver_sql(_PG_STAGE)  # also opens the transaction the COPY must run in
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.copy_records_to_table(_STAGE, records=rows, columns=_SENT)
        await conn.exec_driver_sql(_PG_MERGE)
    else:
        t = sqlite_time
        updated = {u: t(u) for u in {r[17] for r in rows}}  # (a batch's rows share their updated_at)
        params = [
            (
                r[16],
                *r[:9],
                t(r[9]),
                t(r[10]),
                t(r[11]),
                *r[12:16],
                t(r[16]),
                updated[r[17]],
                r[18],
                None if r[19] is None else t(r[19]),
            )
            for r in sorted(rows, key=_KEY)
        ]
        await conn.exec_driver_sql(_SQLITE_UPSERT, params)
    await fix_durations(conn, [r for r in rows if r.ended_at is not None and r.started_at is None])


_KEY = itemgetter(0, 1)


async def fix_durations(conn: AsyncConnection, rows: Sequence[ExecutionRow]) -> None:
    """``duration`` of rows whose start and end came in different batches (rare: an outcome record
    carries its start), computed in Python from the stored times: exact on both databases."""
    if not rows:
        return
    from sqlalchemy import and_, bindparam, or_, select, update

    t = TaskExecution
    keys = [and_(t.job_id == r.job_id, t.attempt == r.attempt) for r in rows]
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
