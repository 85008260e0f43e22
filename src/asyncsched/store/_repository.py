"""Repositories: what the API and the CLI list, filter and page — no SQL outside the store."""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, UnaryExpression, delete, func, literal_column, or_, select
from sqlalchemy.orm import QueryableAttribute

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


Row = TypeVar("Row", TaskExecution, EventMessage)


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


class _History(Generic[Row]):
    """What both history repositories share: the database, the page someone reads (filtered by
    ``_where``, with :meth:`list`'s keyword filters) and retention by ``created_at``."""

    _MODEL: type[Row]
    _ORDER: tuple[UnaryExpression[Any], ...]  # newest first
    _WHAT: str  # the rows' name in messages
    _where: Callable[..., builtins.list[ColumnElement[bool]]]  # list()'s filters, by keyword

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_for_display(
        self, offset: int = 0, limit: int = 50, **filters: Any
    ) -> Page[Row | UnreadableRow]:
        """:meth:`list` (same keyword filters) for a page someone reads: a row that cannot be loaded
        comes back as an :class:`UnreadableRow` instead of failing the page, and the total is counted up
        to :data:`COUNT_LIMIT` rows (``total_capped`` beyond; see :func:`read_page`)."""
        names = inspect.signature(self._where).parameters
        unknown = set(filters) - set(names)
        if unknown:
            raise TypeError(f"unknown {self._WHAT} filters: {', '.join(sorted(unknown))}")
        query = select(self._MODEL).where(*self._where(**{name: filters.get(name) for name in names}))
        return await read_page(
            self.db, query, self._ORDER, offset, limit, model=self._MODEL, count_limit=COUNT_LIMIT
        )

    async def prune(self, older_than: timedelta | datetime) -> int:
        """Delete the rows created (executions: first seen) before ``older_than`` (an age or a cutoff);
        return how many."""
        cutoff = _cutoff(older_than)
        async with self.db.session() as session, session.begin():
            result = await session.execute(delete(self._MODEL).where(self._MODEL.created_at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)


class ExecutionRepository(_History[TaskExecution]):
    """Read access to the execution history (:class:`TaskExecution`, written by the Recorder)."""

    _MODEL = TaskExecution
    _ORDER = (TaskExecution.created_at.desc(), TaskExecution.job_id.desc(), TaskExecution.attempt.desc())
    _WHAT = "execution"

    def _where(
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
        where = _equal(
            (te.agent_name, agent_name),
            (te.scheduled_task_id, task_id),
            (te.queue, queue),
            (te.job_id, job_id),
            (te.task_name, task_name),
        )
        statuses = _statuses(status)
        if statuses is not None:
            where.append(te.status.in_(statuses))
            if ExecutionStatus.SUCCESS.value not in statuses:  # lets both databases use the partial index
                where.append(te.status != literal_column(f"'{ExecutionStatus.SUCCESS.value}'"))
        return where + _window(te.created_at, since, until)

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
        where = self._where(
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
        where = self._where(
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


class EventRepository(_History[EventMessage]):
    """The persisted event log (:class:`EventMessage`)."""

    _MODEL = EventMessage
    _ORDER = (EventMessage.created_at.desc(), EventMessage.id.desc())
    _WHAT = "event"

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
        where = self._where(event_type, agent, since, until, source_agent, target_agent)
        query = select(EventMessage).where(*where)
        return await read_page(self.db, query, self._ORDER, offset, limit)

    def _where(
        self,
        event_type: str | None,
        agent: str | None,
        since: datetime | None,
        until: datetime | None,
        source_agent: str | None,
        target_agent: str | None,
    ) -> builtins.list[ColumnElement[bool]]:
        em = EventMessage
        where = _equal((em.source_agent, source_agent), (em.target_agent, target_agent))
        if event_type is not None and event_type != "*":
            if event_type.endswith("*"):
                prefix = event_type[:-1]
                escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                where.append(em.event_type.like(f"{escaped}%", escape="\\"))
            else:
                where.append(em.event_type == event_type)
        if agent is not None:
            where.append(or_(em.source_agent == agent, em.target_agent == agent))
        return where + _window(em.created_at, since, until)


def _equal(*pairs: tuple[QueryableAttribute[Any], object]) -> list[ColumnElement[bool]]:
    """``column == value`` for each pair whose value is given (not ``None``)."""
    return [column == value for column, value in pairs if value is not None]


def _window(
    column: QueryableAttribute[datetime], since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    """``since`` (inclusive) to ``until`` (exclusive) on ``column``, each bound when given."""
    where: list[ColumnElement[bool]] = []
    if since is not None:
        where.append(column >= _aware(since))
    if until is not None:
        where.append(column < _aware(until))
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
