"""Durable state in SQL: models, engine factory (and, from the store issue, repository and recorder)."""

from .engine import check_database, create_engine, normalize_database_url, session_factory
from .models import Base, EventMessage, ExecutionStatus, ScheduledTask, ScheduleType, TaskExecution

__all__ = [
    "Base",
    "EventMessage",
    "ExecutionStatus",
    "ScheduleType",
    "ScheduledTask",
    "TaskExecution",
    "check_database",
    "create_engine",
    "normalize_database_url",
    "session_factory",
]
