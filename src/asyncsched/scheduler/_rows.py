"""Rows of ``ScheduledTask``: lookup, upsert and detached copies (the scheduler's SQL side)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from .._boundary import find_problem
from ..exceptions import BrokenTask, DuplicateTask, InvalidJob, Problem, TaskDefinitionError, TaskNotFound
from ..queue._functions import parse_reference
from ..store.models import ScheduledTask
from ._definition import anchored_at_registration, task_trigger
from ._index import signature
from ._triggers import parse_schedule

__all__ = [
    "COLUMNS",
    "TaskKey",
    "copy_task",
    "find_key",
    "find_task",
    "load_checked",
    "readable_tasks",
    "row_problems",
    "upsert_tasks",
    "utc",
    "utc_or_none",
]

log = logging.getLogger("asyncsched.scheduler")

UNAVAILABLE: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, OSError, TimeoutError)
"""The database is unreachable: an outage, not a bad row (raised as is)."""

Sessions = Callable[[], AbstractAsyncContextManager[AsyncSession]]

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


@dataclass(frozen=True, slots=True)
class TaskKey:
    """What identifies a task row, read from its key columns alone (no other column can make that fail)."""

    id: str
    agent_name: str
    name: str
    enabled: bool

    def stub(self) -> ScheduledTask:
        """A detached task holding only the key columns (for a row whose other columns cannot be read)."""
        return ScheduledTask(id=self.id, agent_name=self.agent_name, name=self.name, enabled=self.enabled)


_KEY = (ScheduledTask.id, ScheduledTask.agent_name, ScheduledTask.name, ScheduledTask.enabled)


async def find_key(session: AsyncSession, id_or_name: str, agent_name: str | None) -> TaskKey:
    """The key of the row with this id, or of the one task with this name (within ``agent_name``);
    :class:`TaskNotFound`. Reads only the key columns, so it works on a row that cannot be fully loaded."""
    where = [ScheduledTask.agent_name == agent_name] if agent_name is not None else []
    rows = (await session.execute(select(*_KEY).where(ScheduledTask.id == id_or_name, *where))).all()
    if not rows:
        query = select(*_KEY).where(ScheduledTask.name == id_or_name, *where)
        rows = (await session.execute(query)).all()
    if len(rows) == 1:
        row_id, agent, name, enabled = rows[0]
        return TaskKey(str(row_id), str(agent), str(name), bool(enabled))
    if not rows:
        where_text = f" of agent {agent_name!r}" if agent_name else ""
        raise TaskNotFound(f"no scheduled task with id or name {id_or_name!r}{where_text}")
    agents = ", ".join(sorted(str(r[1]) for r in rows))
    raise TaskNotFound(f"several tasks are named {id_or_name!r} (agents {agents}); pass agent_name")


async def find_task(session: AsyncSession, id_or_name: str, agent_name: str | None) -> ScheduledTask:
    """The row with this id, or the one task with this name (within ``agent_name``); :class:`TaskNotFound`."""
    key = await find_key(session, id_or_name, agent_name)
    row = await session.get(ScheduledTask, key.id)
    if row is None:  # deleted between the two reads
        raise TaskNotFound(f"no scheduled task with id or name {id_or_name!r}")
    return row


def _line(exc: BaseException) -> str:
    text = (str(exc).splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _unreadable_column(sessions: Sessions, row_id: str) -> str | None:
    """The first column of row ``row_id`` that cannot be read on its own (each in a fresh session)."""
    for column in (*COLUMNS, "created_at", "updated_at", "last_run_at", "next_run_at", "anchor_at"):
        try:
            async with sessions() as session:
                query = select(getattr(ScheduledTask, column)).where(ScheduledTask.id == row_id)
                await session.scalar(query)
        except UNAVAILABLE:
            raise
        except Exception:
            return column
    return None


async def load_checked(sessions: Sessions, key: TaskKey) -> ScheduledTask:
    """A detached copy of the whole row of ``key``: :class:`BrokenTask` naming the column that cannot be
    read (a hand-edited value no decoder loads), :class:`TaskNotFound` if it is gone."""
    try:
        async with sessions() as session:
            row = await session.get(ScheduledTask, key.id)
            task = None if row is None else copy_task(row)
    except UNAVAILABLE:
        raise
    except Exception as exc:
        field = await _unreadable_column(sessions, key.id)
        message = f"the stored value cannot be read ({_line(exc)}); fix the row or delete the task"
        raise BrokenTask([Problem(message, task=key.name, field=field)]) from None
    if task is None:
        raise TaskNotFound(f"no scheduled task with id {key.id!r}")
    return task


async def readable_tasks(sessions: Sessions) -> list[ScheduledTask]:
    """Detached copies of every task row; when one cannot be loaded, the rows are read one by one and
    each that still fails is logged and left out (one bad row never hides the others)."""
    try:
        async with sessions() as session:
            return [copy_task(t) for t in (await session.execute(select(ScheduledTask))).scalars()]
    except UNAVAILABLE:
        raise
    except Exception:
        async with sessions() as session:
            keys = [TaskKey(*r) for r in (await session.execute(select(*_KEY))).all()]
    rows: list[ScheduledTask] = []
    for key in keys:
        try:
            rows.append(await load_checked(sessions, key))
        except BrokenTask as exc:
            log.error("task %s/%s cannot be read and is not fired: %s", key.agent_name, key.name, exc)
        except LookupError:
            continue
    return rows


_KINDS: dict[str, tuple[type, str]] = {
    "args": (list, "a JSON array"),
    "kwargs": (dict, "a JSON object"),
    "options": (dict, "a JSON object"),
}


def row_problems(task: ScheduledTask) -> list[Problem]:
    """What keeps a stored (readable) task from being enabled or run: JSON columns of the wrong kind or
    with unstorable text, a function reference that does not parse, a schedule or start that no longer
    builds a trigger. Nothing is imported."""
    problems: list[Problem] = []

    def add(field: str, message: str) -> None:
        problems.append(Problem(message, task=task.name, field=field))

    for column, (kind, words) in _KINDS.items():
        value: Any = getattr(task, column)
        if value is not None and not isinstance(value, kind):
            add(column, f"must be {words}, the row holds a {type(value).__name__}")
        elif value is not None and (found := find_problem(value)) is not None:
            add(column, f"{'.'.join(map(str, found[0])) or 'value'} {found[1]}")
    try:
        parse_reference(task.function)
    except (InvalidJob, TypeError, AttributeError) as exc:
        add("function", str(exc) or "not a 'module:function' reference")
    options: Any = task.options
    start = options.get("start") if isinstance(options, dict) else None
    try:
        if start is not None:
            datetime.fromisoformat(start)
    except (TypeError, ValueError):
        add("options.start", f"not an ISO 8601 time: {start!r:.80}")
    try:
        parse_schedule(task.type, task.schedule, task.timezone)
    except TaskDefinitionError as exc:
        problems.extend(Problem(p.message, task=task.name, field=p.field or "schedule") for p in exc.problems)
    except Exception as exc:  # a row edited into something no parser expects
        add("schedule", _line(exc))
    return problems


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
