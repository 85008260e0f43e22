"""Bulk creation of scheduled tasks: one validated batch, one COPY (PostgreSQL) or chunked INSERTs, one
pipelined index write.

:meth:`TaskScheduler.add_tasks` is for many *new* tasks (an import, a generated fleet of schedules): every
task is checked exactly as a single add (:func:`task_trigger` on a :func:`build_task` result, the one
definition in ``_fields``), clashes of ``(agent, name)`` -- within the batch or with stored tasks -- raise
:class:`DuplicateTask` naming them, and the rows go in inside one transaction (all or nothing): one binary
``COPY`` on PostgreSQL, SQLAlchemy Core ``executemany`` in chunks elsewhere. The Redis index is written
after the commit, pipelined in chunks.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Table, insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ..exceptions import DuplicateTask, Problem, TaskDefinitionError
from ..store.models import ScheduledTask
from ._definition import anchored_at_registration, task_trigger
from ._index import ScheduleIndex, signature, to_ms
from ._rows import _DEFAULTS, COLUMNS

__all__ = ["CHUNK", "any_stored", "detached", "first_clash", "index_new", "insert_new", "prepare_new"]

CHUNK = 1000
"""Rows per INSERT statement and commands per Redis pipeline round trip."""
_TABLE = cast(Table, ScheduledTask.__table__)
"""Core, not the ORM: an ``executemany`` of plain tuples, no unit of work."""


def prepare_new(tasks: Sequence[ScheduledTask], now: datetime) -> list[dict[str, Any]]:
    """The rows (column -> value) to insert for ``tasks``: id, defaults, anchor and first tick set.

    Plain dicts, not ORM objects: building 100,000 instrumented objects costs more than storing them. The
    first tick, anchor and index signature are worked out once per distinct schedule (the fleet of a bulk
    registration shares a few). Raises :class:`TaskDefinitionError` for the first task whose schedule does
    not parse (``task`` is ``"#<position> <name>"``) and :class:`DuplicateTask` for a name given twice.
    """
    registered = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the index keeps milliseconds
    seen: dict[tuple[str, str], int] = {}
    plans: dict[tuple[Any, ...], tuple[datetime | None, datetime | None, str]] = {}
    out: list[dict[str, Any]] = []
    for position, task in enumerate(tasks):
        row = _row(task)
        key = (row["agent_name"], row["name"])
        if key in seen:
            raise DuplicateTask(
                f"tasks {seen[key]} and {position} are both named {task.name!r} for agent {task.agent_name!r}"
            )
        seen[key] = position
        row["created_at"] = row["updated_at"] = now
        options = row["options"] or {}
        plan_key = (row["type"], row["schedule"], row["timezone"], options.get("start"), options.get("align"))
        plan = plans.get((*plan_key, row["enabled"]))
        if plan is None:
            try:
                plan = _plan(row, registered, now)
            except TaskDefinitionError as exc:
                where = f"#{position} {task.name}"
                problems = [
                    Problem(p.message, p.file, p.line, where, p.field or "schedule") for p in exc.problems
                ]
                raise TaskDefinitionError(problems) from None
            plans[(*plan_key, row["enabled"])] = plan
        row["anchor_at"], row["next_run_at"], row["sig"] = plan
        out.append(row)
    return out


def _row(task: ScheduledTask) -> dict[str, Any]:
    """``task``'s columns (read from its ``__dict__``, without the ORM's attribute machinery, when set)."""
    values = task.__dict__
    row: dict[str, Any] = {"id": values.get("id") or task.id or uuid.uuid4().hex}
    for column in _GIVEN:
        value = values[column] if column in values else getattr(task, column)
        row[column] = _DEFAULTS[column]() if value is None and column in _DEFAULTS else value
    return row


_GIVEN = ("agent_name", "name", *COLUMNS)


def _plan(
    row: dict[str, Any], registered: datetime, now: datetime
) -> tuple[datetime | None, datetime | None, str]:
    """``(anchor_at, next_run_at, signature)`` of a new row."""
    view = cast(ScheduledTask, SimpleNamespace(**row, anchor_at=None))  # what the helpers read
    view.anchor_at = registered if anchored_at_registration(view) else None
    next_run_at = task_trigger(view).next_after(now) if row["enabled"] else None
    return view.anchor_at, next_run_at, signature(view)


_NAMES = ("id", "agent_name", "name", *COLUMNS, "created_at", "updated_at", "next_run_at", "anchor_at")
_JSON_COLUMNS = frozenset(("args", "kwargs", "options"))


async def insert_new(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` in the caller's transaction (a clash with a stored task fails on the unique
    constraint, as :class:`IntegrityError`: :func:`first_clash` then names it).

    PostgreSQL: one binary ``COPY`` of every row (asyncpg). Other databases: one Core ``executemany`` per
    chunk."""
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        await _copy(conn, rows)
        return
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        await session.execute(insert(_TABLE), [{n: r[n] for n in _NAMES} for r in chunk])


_PLAIN = tuple(n for n in _NAMES if n not in _JSON_COLUMNS)
_plain = itemgetter(*_PLAIN)


async def _copy(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    dumps = json.JSONEncoder().encode  # json.dumps's text, as SQLAlchemy's JSON type writes it
    records = [(*_plain(r), dumps(r["args"]), dumps(r["kwargs"]), dumps(r["options"])) for r in rows]
    await conn.exec_driver_sql("SELECT 1")  # opens the transaction the COPY must run in
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    columns = (*_PLAIN, "args", "kwargs", "options")
    try:
        await driver.copy_records_to_table(
            _TABLE.name, records=records, columns=columns, schema_name=_TABLE.schema
        )
    except Exception as exc:
        if type(exc).__name__ == "UniqueViolationError":  # asyncpg's; SQLAlchemy's word for it
            raise IntegrityError(f"COPY {_TABLE.name}", None, exc) from None
        raise


async def first_clash(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> DuplicateTask | None:
    """The error naming the first of ``rows`` whose agent and name are already stored (``None``: none)."""
    for start in range(0, len(rows), CHUNK):
        keys = [(r["agent_name"], r["name"]) for r in rows[start : start + CHUNK]]
        query = select(ScheduledTask.agent_name, ScheduledTask.name).where(
            tuple_(ScheduledTask.agent_name, ScheduledTask.name).in_(keys)
        )
        clash = (await session.execute(query.limit(1))).first()
        if clash is not None:
            return DuplicateTask(f"a task named {clash[1]!r} already exists for agent {clash[0]!r}")
    return None


async def index_new(index: ScheduleIndex, rows: Sequence[dict[str, Any]]) -> None:
    """Index freshly inserted tasks (new ids: nothing to compare with), one pipeline per chunk."""
    due = [r for r in rows if r["next_run_at"] is not None]
    for start in range(0, len(due), CHUNK):
        chunk = due[start : start + CHUNK]
        async with index.redis.pipeline(transaction=False) as pipe:
            pipe.hset(index.sig_key, mapping={r["id"]: r["sig"] for r in chunk})  # type: ignore[unused-awaitable]
            pipe.zadd(index.next_key, {r["id"]: to_ms(r["next_run_at"]) for r in chunk})  # type: ignore[unused-awaitable]
            await pipe.execute()


def detached(rows: Sequence[dict[str, Any]]) -> list[ScheduledTask]:
    """Stored tasks as :class:`ScheduledTask` objects (for callers that want them, such as a file load)."""
    return [ScheduledTask(**{n: r[n] for n in _NAMES}) for r in rows]


async def any_stored(session: AsyncSession, tasks: Sequence[ScheduledTask], source: str | None) -> bool:
    """Whether any of ``tasks`` (by agent and name), or any task of ``source`` for their agents, is stored:
    when not, a file's registration is a pure creation and takes the bulk path."""
    if source is not None:
        agents = {t.agent_name for t in tasks}
        query = select(ScheduledTask.id).where(
            ScheduledTask.source == source, ScheduledTask.agent_name.in_(agents)
        )
        if (await session.execute(query.limit(1))).first() is not None:
            return True
    for start in range(0, len(tasks), CHUNK):
        keys = [(t.agent_name, t.name) for t in tasks[start : start + CHUNK]]
        query = select(ScheduledTask.id).where(tuple_(ScheduledTask.agent_name, ScheduledTask.name).in_(keys))
        if (await session.execute(query.limit(1))).first() is not None:
            return True
    return False
