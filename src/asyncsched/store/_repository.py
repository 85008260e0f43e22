"""Repositories: what the API and the CLI list, filter and page — no SQL outside the store."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, literal_column, or_, select

from ..exceptions import EventNotFound, ExecutionNotFound
from ._database import Database
from ._pages import COUNT_LIMIT, MAX_LIMIT, Page, UnreadableRow, read_page
from .models import EventMessage, ExecutionStatus, TaskExecution, utcnow

__all__ = [
    "MAX_LIMIT",
    "EventNotFound",
    "EventRepository",
    "ExecutionNotFound",
    "ExecutionRepository",
    "Page",
    "PruneResult",
    "UnreadableRow",
    "prune",
]


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _statuses(status: str | Iterable[str] | None) -> list[str] | None:
    if status is None:
        return None
    values = [status] if isinstance(status, str) else list(status)
    known = {s.value for s in ExecutionStatus}
    for value in values:
        if value not in known:
            raise ValueError(
                f"unknown execution status {value!r}; expected one of {', '.join(sorted(known))}"
            )
    return [str(v) for v in values]


class ExecutionRepository:
    """Read access to the execution history (:class:`TaskExecution`, written by the Recorder)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _filters(
        self,
        *,
        agent_name: str | None,
        status: str | Iterable[str] | None,
        task_id: str | None,
        since: datetime | None,
        until: datetime | None,
        queue: str | None,
        job_id: str | None,
        task_name: str | None = None,
    ) -> list[ColumnElement[bool]]:
        te = TaskExecution
        where: list[ColumnElement[bool]] = []
        if agent_name is not None:
            where.append(te.agent_name == agent_name)
        statuses = _statuses(status)
        if statuses is not None:
            where.append(te.status.in_(statuses))
            if ExecutionStatus.SUCCESS.value not in statuses:  # lets both databases use the partial index
                where.append(te.status != literal_column(f"'{ExecutionStatus.SUCCESS.value}'"))
        if task_id is not None:
            where.append(te.scheduled_task_id == task_id)
        if since is not None:
            where.append(te.created_at >= _aware(since))
        if until is not None:
            where.append(te.created_at < _aware(until))
        if queue is not None:
            where.append(te.queue == queue)
        if job_id is not None:
            where.append(te.job_id == job_id)
        if task_name is not None:
            where.append(te.task_name == task_name)
        return where

    async def list(
        self,
        agent_name: str | None = None,
        status: str | Iterable[str] | None = None,
        task_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
        *,
        queue: str | None = None,
        job_id: str | None = None,
        task_name: str | None = None,
    ) -> Page[TaskExecution]:
        """Executions, newest first (by ``created_at``), filtered and paged.

        ``status`` is one status or several; ``task_id`` is the scheduled task's id (``task_name`` the
        recorded task name, e.g. of ad-hoc jobs); ``since`` (inclusive)
        and ``until`` (exclusive) bound ``created_at``. ``limit`` is capped at :data:`MAX_LIMIT`.
        """
        where = self._filters(
            agent_name=agent_name,
            status=status,
            task_id=task_id,
            since=since,
            until=until,
            queue=queue,
            job_id=job_id,
            task_name=task_name,
        )
        return await read_page(self.db, select(TaskExecution).where(*where), self._ORDER, offset, limit)

    _ORDER = (TaskExecution.created_at.desc(), TaskExecution.job_id.desc(), TaskExecution.attempt.desc())

    async def list_for_display(
        self, offset: int = 0, limit: int = 50, **filters: Any
    ) -> Page[TaskExecution | UnreadableRow]:
        """:meth:`list` (same keyword filters) for a page someone reads: a row that cannot be loaded
        comes back as an :class:`UnreadableRow` instead of failing the page, and the total is counted up
        to :data:`COUNT_LIMIT` rows (``total_capped`` beyond; see :func:`read_page`)."""
        where = self._filters(
            agent_name=filters.pop("agent_name", None),
            status=filters.pop("status", None),
            task_id=filters.pop("task_id", None),
            since=filters.pop("since", None),
            until=filters.pop("until", None),
            queue=filters.pop("queue", None),
            job_id=filters.pop("job_id", None),
            task_name=filters.pop("task_name", None),
        )
        if filters:
            raise TypeError(f"unknown execution filters: {', '.join(sorted(filters))}")
        query = select(TaskExecution).where(*where)
        return await read_page(
            self.db, query, self._ORDER, offset, limit, model=TaskExecution, count_limit=COUNT_LIMIT
        )

    async def get(self, id_or_job_id: str) -> TaskExecution:
        """The execution with this id, else the latest attempt of the job with this id.

        Raises :class:`ExecutionNotFound` (a ``LookupError``) when neither exists.
        """
        async with self.db.session() as session:
            row = await session.get(TaskExecution, id_or_job_id)
            if row is None:
                row = await session.scalar(
                    select(TaskExecution)
                    .where(TaskExecution.job_id == id_or_job_id)
                    .order_by(TaskExecution.attempt.desc())
                    .limit(1)
                )
        if row is None:
            raise ExecutionNotFound(f"no execution or job with id {id_or_job_id!r} in the history")
        return row

    async def attempts(self, job_id: str) -> builtins.list[TaskExecution]:
        """Every recorded attempt of one job, first attempt first (empty if none)."""
        async with self.db.session() as session:
            rows = await session.scalars(
                select(TaskExecution).where(TaskExecution.job_id == job_id).order_by(TaskExecution.attempt)
            )
            return list(rows.all())

    async def counts(
        self,
        agent_name: str | None = None,
        task_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        queue: str | None = None,
    ) -> dict[str, int]:
        """Number of executions per status (statuses with none are absent), with the same filters."""
        where = self._filters(
            agent_name=agent_name,
            status=None,
            task_id=task_id,
            since=since,
            until=until,
            queue=queue,
            job_id=None,
        )
        query = select(TaskExecution.status, func.count()).where(*where).group_by(TaskExecution.status)
        async with self.db.session() as session:
            return {status: int(n) for status, n in (await session.execute(query)).all()}

    async def prune(self, older_than: timedelta | datetime) -> int:
        """Delete executions first seen before ``older_than`` (an age or a cutoff); return how many."""
        cutoff = _cutoff(older_than)
        async with self.db.session() as session, session.begin():
            result = await session.execute(delete(TaskExecution).where(TaskExecution.created_at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)


class EventRepository:
    """The persisted event log (:class:`EventMessage`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        event_type: str,
        source_agent: str,
        payload: dict[str, Any] | None = None,
        target_agent: str | None = None,
        *,
        id: str | None = None,
        created_at: datetime | None = None,
    ) -> EventMessage:
        """Store one event (an existing ``id`` is kept as is, not duplicated); return the stored row."""
        row = EventMessage(
            event_type=event_type,
            source_agent=source_agent,
            target_agent=target_agent,
            payload=dict(payload or {}),
            created_at=_aware(created_at) if created_at else utcnow(),
        )
        if id is not None:
            row.id = id
        async with self.db.session() as session, session.begin():
            existing = await session.get(EventMessage, row.id) if id is not None else None
            if existing is not None:
                return existing
            session.add(row)
        return row

    async def get(self, event_id: str) -> EventMessage:
        """The event with this id; raises :class:`EventNotFound` (a ``LookupError``)."""
        async with self.db.session() as session:
            row = await session.get(EventMessage, event_id)
        if row is None:
            raise EventNotFound(f"no persisted event with id {event_id!r}")
        return row

    async def list(
        self,
        event_type: str | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
        *,
        until: datetime | None = None,
        source_agent: str | None = None,
        target_agent: str | None = None,
    ) -> Page[EventMessage]:
        """Events, newest first, filtered and paged.

        ``event_type`` is exact, or a prefix pattern ending in ``*`` (``task.*`` matches ``task.failed``;
        ``*`` matches all). ``agent`` matches the source or the target; broadcasts (no target) match
        every ``agent`` given as a target only through ``target_agent``. ``since`` is inclusive, ``until``
        exclusive.
        """
        where = _event_filters(event_type, agent, since, until, source_agent, target_agent)
        query = select(EventMessage).where(*where)
        return await read_page(self.db, query, self._ORDER, offset, limit)

    _ORDER = (EventMessage.created_at.desc(), EventMessage.id.desc())

    async def list_for_display(
        self, offset: int = 0, limit: int = 50, **filters: Any
    ) -> Page[EventMessage | UnreadableRow]:
        """:meth:`list` (same keyword filters) for a page someone reads: a row that cannot be loaded
        comes back as an :class:`UnreadableRow` instead of failing the page, and the total is counted up
        to :data:`COUNT_LIMIT` rows (``total_capped`` beyond; see :func:`read_page`)."""
        names = ("event_type", "agent", "since", "until", "source_agent", "target_agent")
        unknown = set(filters) - set(names)
        if unknown:
            raise TypeError(f"unknown event filters: {', '.join(sorted(unknown))}")
        query = select(EventMessage).where(*_event_filters(*(filters.get(n) for n in names)))
        return await read_page(
            self.db, query, self._ORDER, offset, limit, model=EventMessage, count_limit=COUNT_LIMIT
        )

    async def prune(self, older_than: timedelta | datetime) -> int:
        """Delete events created before ``older_than`` (an age or a cutoff); return how many."""
        cutoff = _cutoff(older_than)
        async with self.db.session() as session, session.begin():
            result = await session.execute(delete(EventMessage).where(EventMessage.created_at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)


def _event_filters(
    event_type: str | None,
    agent: str | None,
    since: datetime | None,
    until: datetime | None,
    source_agent: str | None,
    target_agent: str | None,
) -> list[ColumnElement[bool]]:
    em = EventMessage
    where: list[ColumnElement[bool]] = []
    if event_type is not None and event_type != "*":
        if event_type.endswith("*"):
            prefix = event_type[:-1]
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(em.event_type.like(f"{escaped}%", escape="\\"))
        else:
            where.append(em.event_type == event_type)
    if agent is not None:
        where.append(or_(em.source_agent == agent, em.target_agent == agent))
    if source_agent is not None:
        where.append(em.source_agent == source_agent)
    if target_agent is not None:
        where.append(em.target_agent == target_agent)
    if since is not None:
        where.append(em.created_at >= _aware(since))
    if until is not None:
        where.append(em.created_at < _aware(until))
    return where


def _cutoff(older_than: timedelta | datetime) -> datetime:
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise ValueError(f"retention age must not be negative, got {older_than}")
        return utcnow() - older_than
    return _aware(older_than)


@dataclass(frozen=True, slots=True)
class PruneResult:
    """How many rows :func:`prune` deleted."""

    executions: int
    events: int


async def prune(db: Database, older_than: timedelta | datetime) -> PruneResult:
    """Retention: delete executions and events older than ``older_than`` (an age or a cutoff)."""
    executions = await ExecutionRepository(db).prune(older_than)
    events = await EventRepository(db).prune(older_than)
    return PruneResult(executions, events)
