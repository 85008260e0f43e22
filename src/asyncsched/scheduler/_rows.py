"""Rows of ``ScheduledTask``: lookup, upsert and detached copies (the scheduler's SQL side)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..exceptions import DuplicateTask, TaskNotFound
from ..store.models import ScheduledTask
from ._definition import anchored_at_registration, task_trigger
from ._index import signature

__all__ = ["COLUMNS", "copy_task", "find_task", "upsert_tasks", "utc", "utc_or_none"]

COLUMNS = (
    "description",
    "enabled",
    "type",
    "schedule",
    "timezone",
    "function",
    "args",
    "kwargs",
    "queue",
    "options",
    "source",
)
"""The columns a definition sets (id, agent, name and run times are handled apart)."""

_DEFAULTS: dict[str, Callable[[], object]] = {
    "enabled": lambda: True,
    "timezone": lambda: "UTC",
    "queue": lambda: "default",
    "args": list,
    "kwargs": dict,
    "options": dict,
}
"""Values of columns left ``None`` on a new task built in code (SQL defaults apply only at insert)."""


def utc(dt: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone-aware columns: they are UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def utc_or_none(dt: datetime | None) -> datetime | None:
    return None if dt is None else utc(dt)


def copy_task(task: ScheduledTask) -> ScheduledTask:
    """A detached copy safe to hand out and to cache (times as aware UTC on every database)."""
    clone = ScheduledTask(
        id=task.id,
        agent_name=task.agent_name,
        name=task.name,
        created_at=utc_or_none(task.created_at),
        updated_at=utc_or_none(task.updated_at),
        last_run_at=utc_or_none(task.last_run_at),
        next_run_at=utc_or_none(task.next_run_at),
        anchor_at=utc_or_none(task.anchor_at),
    )
    for column in COLUMNS:
        setattr(clone, column, getattr(task, column))
    return clone


async def find_task(session: AsyncSession, id_or_name: str, agent_name: str | None) -> ScheduledTask:
    """The row with this id, or the one task with this name (within ``agent_name``); :class:`TaskNotFound`."""
    row = await session.get(ScheduledTask, id_or_name)
    if row is not None and (agent_name is None or row.agent_name == agent_name):
        return row
    query = select(ScheduledTask).where(ScheduledTask.name == id_or_name)
    if agent_name is not None:
        query = query.where(ScheduledTask.agent_name == agent_name)
    rows = list((await session.execute(query)).scalars())
    if len(rows) == 1:
        return rows[0]
    if not rows:
        where = f" of agent {agent_name!r}" if agent_name else ""
        raise TaskNotFound(f"no scheduled task with id or name {id_or_name!r}{where}")
    agents = ", ".join(sorted(r.agent_name for r in rows))
    raise TaskNotFound(f"several tasks are named {id_or_name!r} (agents {agents}); pass agent_name")


async def upsert_tasks(
    session: AsyncSession,
    tasks: Sequence[ScheduledTask],
    prune_source: str | None,
    now: datetime,
    *,
    create_only: bool = False,
) -> tuple[list[ScheduledTask], list[str]]:
    """Create or update ``tasks`` (by id when set, else by agent and name) in the caller's transaction.

    A task whose schedule signature changes gets ``next_run_at`` re-planned from ``now`` and, when its
    interval counts from registration, ``anchor_at = now`` (the same definition registered again keeps
    both). With ``prune_source``, the agents' other tasks from that source are deleted. Returns detached
    copies of the stored tasks and the ids deleted. ``create_only``: an existing task
    raises :class:`DuplicateTask`.
    """
    stored: list[ScheduledTask] = []
    for task in tasks:
        task_trigger(task)  # invalid definitions fail before anything is written
        row = await session.get(ScheduledTask, task.id) if task.id else None
        if row is None:
            query = select(ScheduledTask).where(
                ScheduledTask.agent_name == task.agent_name, ScheduledTask.name == task.name
            )
            row = (await session.execute(query)).scalar_one_or_none()
        if row is not None and create_only:
            raise DuplicateTask(f"a task named {task.name!r} already exists for agent {task.agent_name!r}")
        if row is None:
            row = ScheduledTask(agent_name=task.agent_name, name=task.name, source=None)
            if task.id:
                row.id = task.id
            session.add(row)
            old_sig = None
        else:
            old_sig = signature(row)
            row.agent_name, row.name = task.agent_name, task.name  # a rename, when found by id
        for column in COLUMNS:
            value = getattr(task, column)
            if value is None:
                value = _DEFAULTS[column]() if column in _DEFAULTS else getattr(row, column)
            if getattr(row, column) != value:
                setattr(row, column, value)
        if old_sig != signature(row):
            # Ticks count from here: whole milliseconds, as the index stores them.
            registered = now.replace(microsecond=now.microsecond // 1000 * 1000)
            row.anchor_at = registered if anchored_at_registration(row) else None
            row.next_run_at = task_trigger(row).next_after(now) if row.enabled else None
        await session.flush()
        stored.append(row)
    removed: list[str] = []
    if prune_source is not None:
        agents = {t.agent_name for t in tasks}
        keep = {t.id for t in stored}
        query_ids = select(ScheduledTask.id).where(
            ScheduledTask.source == prune_source, ScheduledTask.agent_name.in_(agents)
        )
        removed = [task_id for task_id in (await session.execute(query_ids)).scalars() if task_id not in keep]
        if removed:
            await session.execute(delete(ScheduledTask).where(ScheduledTask.id.in_(removed)))
    return [copy_task(t) for t in stored], removed
