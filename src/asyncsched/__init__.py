"""asyncsched: asyncio background jobs on python-rq's Redis format — queue, scheduler and event bus."""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import Settings, get_settings
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

if TYPE_CHECKING:
    from ._control import ControlPlane
    from ._lifespan import lifespan
    from ._spec_names import init_db, logger
    from .events import Event, EventBus, LifecyclePublisher, Subscription
    from .queue import JobRecord, JobStatus, Retry, TaskQueue
    from .scheduler import MisfirePolicy, TaskScheduler, parse_schedule
    from .store import Database, EventRepository, ExecutionRepository, Page, Recorder
    from .store.models import EventMessage, ExecutionStatus, ScheduledTask, ScheduleType, TaskExecution
    from .web import create_app, scheduler_router
    from .worker import CurrentJob, Worker, current_job


# Heavy parts (SQLAlchemy, croniter, ...) load on first use, so `import asyncsched.worker` stays lean.
_LAZY: dict[str, str] = {
    "ControlPlane": "._control",
    "create_app": ".web",
    "init_db": "._spec_names",
    "lifespan": "._lifespan",
    "logger": "._spec_names",
    "scheduler_router": ".web",
    "Database": ".store",
    "Event": ".events",
    "EventBus": ".events",
    "EventMessage": ".store.models",
    "EventRepository": ".store",
    "ExecutionRepository": ".store",
    "ExecutionStatus": ".store.models",
    "JobRecord": ".queue",
    "JobStatus": ".queue",
    "LifecyclePublisher": ".events",
    "MisfirePolicy": ".scheduler",
    "Page": ".store",
    "Recorder": ".store",
    "Retry": ".queue",
    "ScheduleType": ".store.models",
    "ScheduledTask": ".store.models",
    "Subscription": ".events",
    "TaskExecution": ".store.models",
    "TaskQueue": ".queue",
    "TaskScheduler": ".scheduler",
    "parse_schedule": ".scheduler",
    "Worker": ".worker",
    "CurrentJob": ".worker",
    "current_job": ".worker",
}

__all__ = [
    "AsyncschedError",
    "BackendUnavailable",
    "ConfigurationError",
    "ControlPlane",
    "CurrentJob",
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
    "Worker",
    "__version__",
    "create_app",
    "current_job",
    "get_settings",
    "init_db",
    "lifespan",
    "logger",
    "parse_schedule",
    "scheduler_router",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncsched' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
