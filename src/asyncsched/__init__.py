"""asyncsched: asyncio background jobs on python-rq's Redis format — queue, scheduler and event bus."""

from ._version import __version__
from .config import Settings, get_settings
from .events import Event, EventBus, LifecyclePublisher, Subscription
from .exceptions import (
    AsyncschedError,
    BackendUnavailable,
    ConfigurationError,
    DuplicateTask,
    FunctionNotAllowed,
    InvalidJob,
    InvalidSchedule,
    JobError,
    JobNotFound,
    JobTimeout,
    SerializationError,
    TaskDefinitionError,
    TaskNotFound,
    UnsafeJob,
    UnsupportedURL,
)
from .queue import JobRecord, JobStatus, Retry, TaskQueue
from .scheduler import MisfirePolicy, TaskScheduler, parse_schedule
from .store import Database, EventRepository, ExecutionRepository, Page, Recorder
from .store.models import EventMessage, ExecutionStatus, ScheduledTask, ScheduleType, TaskExecution

__all__ = [
    "AsyncschedError",
    "BackendUnavailable",
    "ConfigurationError",
    "Database",
    "DuplicateTask",
    "Event",
    "EventBus",
    "EventMessage",
    "EventRepository",
    "ExecutionRepository",
    "ExecutionStatus",
    "FunctionNotAllowed",
    "InvalidJob",
    "InvalidSchedule",
    "JobError",
    "JobNotFound",
    "JobRecord",
    "JobStatus",
    "JobTimeout",
    "LifecyclePublisher",
    "MisfirePolicy",
    "Page",
    "Recorder",
    "Retry",
    "ScheduleType",
    "ScheduledTask",
    "SerializationError",
    "Settings",
    "Subscription",
    "TaskDefinitionError",
    "TaskExecution",
    "TaskNotFound",
    "TaskQueue",
    "TaskScheduler",
    "UnsafeJob",
    "UnsupportedURL",
    "__version__",
    "get_settings",
    "parse_schedule",
]
