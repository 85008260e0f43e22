"""Durable state in SQL: models, the database handle, migrations, repositories and the history recorder.

* :class:`Database` — engine + sessions + Alembic migrations shipped in ``store/migrations``.
* :class:`ExecutionRepository`, :class:`EventRepository`, :class:`TaskRepository` — paged, filtered reads for
  the API and CLI (``list_for_display`` pages survive rows that cannot be loaded: :class:`UnreadableRow`).
* :class:`Recorder` — writes the lifecycle stream and the event log to SQL in batches, off the hot path;
  :func:`open_recorder` gives it, or on a Redis Cluster :class:`RecorderLanes` (one per lifecycle stream).
"""

from ..exceptions import MigrationError
from ._database import Database
from ._recorder import Recorder
from ._recorder_lanes import RecorderLanes, open_recorder
from ._repository import (
    EventNotFound,
    EventRepository,
    ExecutionNotFound,
    ExecutionRepository,
    Page,
    PruneResult,
    UnreadableRow,
    prune,
)
from ._tasks import TaskRepository
from .engine import check_database, create_engine, normalize_database_url, session_factory
from .models import Base, EventMessage, ExecutionStatus, ScheduledTask, ScheduleType, TaskExecution

__all__ = [
    "Base",
    "Database",
    "EventMessage",
    "EventNotFound",
    "EventRepository",
    "ExecutionNotFound",
    "ExecutionRepository",
    "ExecutionStatus",
    "MigrationError",
    "Page",
    "PruneResult",
    "Recorder",
    "RecorderLanes",
    "ScheduleType",
    "ScheduledTask",
    "TaskExecution",
    "TaskRepository",
    "UnreadableRow",
    "check_database",
    "create_engine",
    "normalize_database_url",
    "open_recorder",
    "prune",
    "session_factory",
]
