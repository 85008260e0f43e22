"""SQL models (SQLAlchemy 2, typed, async): schedules, execution history and the event log.

Redis is the hot path; these tables are what must be durable and queryable (``docs/architecture.md``).
Ids are text so they can be made on any replica without a round trip; timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Base",
    "EventMessage",
    "ExecutionStatus",
    "ScheduleType",
    "ScheduledTask",
    "TaskExecution",
    "UTCDateTime",
]


def _uuid() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names are fixed, so migrations (and SQLite batch migrations) can refer to them."""


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always hands back an aware UTC datetime.

    PostgreSQL keeps the offset; SQLite keeps none, so values are stored as naive UTC and marked UTC on the
    way out. A naive datetime given by a caller is taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of asyncsched's tables (``Base.metadata`` is what the migrations must produce)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class ScheduleType(enum.StrEnum):
    """How a scheduled task's ``schedule`` string is read."""

    INTERVAL = "interval"
    CRON = "cron"


class ExecutionStatus(enum.StrEnum):
    """The spec's execution statuses (RQ's own vocabulary is mapped onto these)."""

    SCHEDULED = "scheduled"
    DEFERRED = "deferred"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    """A scheduled tick that did not run because its task's previous run was still queued or running
    (``overlap: skip``); ``error`` says which run and why."""
    UNKNOWN = "unknown"
    """The outcome was never recorded and cannot be any more: the job's lifecycle records were lost
    (dropped past ``ASYNCSCHED_LIFECYCLE_MAXLEN``) or the job vanished from Redis. ``error`` says why.
    A late outcome record still replaces it."""


class ScheduledTask(Base):
    """A recurring task definition, from a ``tasks.yaml`` file or the API: the source of truth."""

    __tablename__ = "asyncsched_scheduled_tasks"
    __table_args__ = (
        UniqueConstraint("agent_name", "name", name="uq_scheduled_task_agent_name"),
        Index("ix_scheduled_task_next_run", "enabled", "next_run_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    agent_name: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    enabled: Mapped[bool] = mapped_column(default=True)
    type: Mapped[str] = mapped_column(String(16))
    schedule: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    function: Mapped[str] = mapped_column(String(500))
    args: Mapped[list[Any]] = mapped_column(default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    queue: Mapped[str] = mapped_column(String(200), default="default")
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[str | None] = mapped_column(String(1000), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_run_at: Mapped[datetime | None] = mapped_column(default=None)
    next_run_at: Mapped[datetime | None] = mapped_column(default=None)
    anchor_at: Mapped[datetime | None] = mapped_column(default=None)
    """Interval tasks: when the current schedule was registered, the instant its ticks count from
    (``anchor + k * interval``); set by the scheduler, the same for every replica. ``None``: Unix epoch
    (``align: epoch``, and tasks stored before this column existed)."""

    def __repr__(self) -> str:
        return f"<ScheduledTask {self.agent_name}/{self.name} {self.type} {self.schedule!r}>"


UNFINISHED_WHERE = "status <> 'success'"
"""The predicate of the partial status index of the executions (rows that did not succeed)."""


class TaskExecution(Base):
    """One attempt of one job: ad-hoc (``scheduled_task_id`` null) or fired by a schedule.

    Written by the :class:`~asyncsched.store.Recorder` from the lifecycle stream, one row per
    ``(job_id, attempt)``. ``created_at`` is when the attempt was first seen (the time of its earliest
    lifecycle record): lists are ordered by it, time filters and retention use it.
    """

    __tablename__ = "asyncsched_task_executions"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt", name="uq_task_execution_job_attempt"),
        # The list's whole order (created_at, job_id, attempt) after each filter: a page is read off one
        # index, with no sort (migration 0003).
        Index("ix_task_execution_page", "created_at", "job_id", "attempt"),
        # partial: a row without an agent (or a task, below) costs no entry (0005)
        Index(
            "ix_task_execution_agent_page",
            "agent_name",
            "created_at",
            "job_id",
            "attempt",
            postgresql_where=text("agent_name IS NOT NULL"),
            sqlite_where=text("agent_name IS NOT NULL"),
        ),
        # partial: an execution that succeeded (most of them) costs no entry here; filters on other statuses
        # name UNFINISHED_WHERE in their query (the repository does) so both databases use it (0004)
        Index(
            "ix_task_execution_unfinished_page",
            "status",
            "created_at",
            "job_id",
            "attempt",
            postgresql_where=text(UNFINISHED_WHERE),
            sqlite_where=text(UNFINISHED_WHERE),
        ),
        Index(
            "ix_task_execution_task_page",
            "scheduled_task_id",
            "created_at",
            "job_id",
            "attempt",
            postgresql_where=text("scheduled_task_id IS NOT NULL"),
            sqlite_where=text("scheduled_task_id IS NOT NULL"),
        ),
        Index("ix_task_execution_queue_page", "queue", "created_at", "job_id", "attempt"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    job_id: Mapped[str] = mapped_column(String(200))
    scheduled_task_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("asyncsched_scheduled_tasks.id", ondelete="SET NULL"), default=None
    )
    agent_name: Mapped[str | None] = mapped_column(String(200), default=None)
    task_name: Mapped[str | None] = mapped_column(String(200), default=None)
    function: Mapped[str | None] = mapped_column(String(500), default=None)
    queue: Mapped[str] = mapped_column(String(200), default="default")
    status: Mapped[str] = mapped_column(String(16), default=ExecutionStatus.QUEUED.value)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    worker_name: Mapped[str | None] = mapped_column(String(200), default=None)
    enqueued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    duration: Mapped[float | None] = mapped_column(Float, default=None)
    result: Mapped[Any | None] = mapped_column(JSON(none_as_null=True), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    traceback: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    progress: Mapped[Any | None] = mapped_column(JSON(none_as_null=True), default=None)
    """The latest progress the job reported (``current_job().progress()``): a fraction or a JSON object."""
    progress_at: Mapped[datetime | None] = mapped_column(default=None)
    """When that progress was reported."""

    def __repr__(self) -> str:
        return f"<TaskExecution {self.job_id}#{self.attempt} {self.status}>"


class EventMessage(Base):
    """One event published on the bus (persisted when event logging is on)."""

    __tablename__ = "asyncsched_event_messages"
    __table_args__ = (Index("ix_event_message_type_created", "event_type", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=_uuid)
    event_type: Mapped[str] = mapped_column(String(200))
    source_agent: Mapped[str] = mapped_column(String(200), index=True)
    target_agent: Mapped[str | None] = mapped_column(String(200), default=None, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    def __repr__(self) -> str:
        return f"<EventMessage {self.event_type} from {self.source_agent}>"
