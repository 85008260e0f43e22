"""Bulk creation of scheduled tasks: one validated batch, multi-row INSERTs, one pipelined index write.

:meth:`TaskScheduler.add_tasks` is for many *new* tasks (an import, a generated fleet of schedules): every
task is checked exactly as a single add (:func:`task_trigger` on a :func:`build_task` result, the one
definition in ``_fields``), clashes of ``(agent, name)`` -- within the batch or with stored tasks -- raise
:class:`DuplicateTask` naming them, and the rows go in with SQLAlchemy Core ``executemany`` in chunks inside
one transaction (all or nothing). The Redis index is written after the commit, pipelined in chunks.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from ..exceptions import DuplicateTask, Problem, TaskDefinitionError
from ..store.models import ScheduledTask
from ._definition import anchored_at_registration, task_trigger
from ._index import ScheduleIndex, signature, to_ms
from ._rows import _DEFAULTS, COLUMNS, copy_task

__all__ = ["CHUNK", "any_stored", "detached", "index_new", "insert_new", "prepare_new"]

CHUNK = 1000
"""Rows per INSERT statement and commands per Redis pipeline round trip."""
_TABLE = cast(Table, ScheduledTask.__table__)
"""Core, not the ORM: an ``executemany`` of plain tuples, no unit of work."""


def prepare_new(tasks: Sequence[ScheduledTask], now: datetime) -> list[ScheduledTask]:
    """Detached, complete copies of ``tasks`` ready to insert: id, defaults, anchor and first tick set.

    Raises :class:`TaskDefinitionError` for the first task whose schedule does not parse (its index in
    ``tasks`` is the problem's ``task``) and :class:`DuplicateTask` for a name given twice.
    """
    registered = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the index keeps milliseconds
    seen: dict[tuple[str, str], int] = {}
    out: list[ScheduledTask] = []
    for position, task in enumerate(tasks):
        key = (task.agent_name, task.name)
        if key in seen:
            raise DuplicateTask(
                f"tasks {seen[key]} and {position} are both named {task.name!r} for agent {task.agent_name!r}"
            )
        seen[key] = position
        row = ScheduledTask(
            id=task.id or uuid.uuid4().hex, agent_name=task.agent_name, name=task.name, created_at=now
        )
        row.updated_at = now
        for column in COLUMNS:
            value = getattr(task, column)
            if value is None and column in _DEFAULTS:
                value = _DEFAULTS[column]()
            setattr(row, column, value)
        row.anchor_at = registered if anchored_at_registration(row) else None
        try:
            row.next_run_at = task_trigger(row).next_after(now) if row.enabled else None
        except TaskDefinitionError as exc:
            where = f"#{position} {task.name}"
            problems = [
                Problem(p.message, p.file, p.line, where, p.field or "schedule") for p in exc.problems
            ]
            raise TaskDefinitionError(problems) from None
        out.append(row)
    return out


async def insert_new(session: AsyncSession, rows: Sequence[ScheduledTask]) -> None:
    """Insert ``rows`` in the caller's transaction; :class:`DuplicateTask` names the first stored clash."""
    names = ["id", "agent_name", "name", *COLUMNS, "created_at", "updated_at", "next_run_at", "anchor_at"]
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        keys = [(r.agent_name, r.name) for r in chunk]
        query = select(ScheduledTask.agent_name, ScheduledTask.name).where(
            tuple_(ScheduledTask.agent_name, ScheduledTask.name).in_(keys)
        )
        clash = (await session.execute(query.limit(1))).first()
        if clash is not None:
            raise DuplicateTask(f"a task named {clash[1]!r} already exists for agent {clash[0]!r}")
        await session.execute(insert(_TABLE), [{n: getattr(r, n) for n in names} for r in chunk])


async def index_new(index: ScheduleIndex, rows: Sequence[ScheduledTask]) -> None:
    """Index freshly inserted tasks (new ids: nothing to compare with), one pipeline per chunk."""
    due = [r for r in rows if r.enabled and r.next_run_at is not None]
    for start in range(0, len(due), CHUNK):
        chunk = due[start : start + CHUNK]
        async with index.redis.pipeline(transaction=False) as pipe:
            pipe.hset(index.sig_key, mapping={r.id: signature(r) for r in chunk})  # type: ignore[unused-awaitable]
            scores = {r.id: to_ms(r.next_run_at) for r in chunk if r.next_run_at is not None}
            pipe.zadd(index.next_key, scores)  # type: ignore[unused-awaitable]
            await pipe.execute()


def detached(rows: Sequence[ScheduledTask]) -> list[ScheduledTask]:
    return [copy_task(r) for r in rows]


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
