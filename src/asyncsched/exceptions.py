"""Every exception asyncsched raises, rooted at :class:`AsyncschedError`.

::

    AsyncschedError
    ├── ConfigurationError (ValueError)          bad settings, unknown URL scheme
    │   └── UnsupportedURL                         a URL whose scheme we do not serve
    ├── BackendUnavailable (ConnectionError)     Redis or the database cannot be reached
    ├── RedisRefused (RuntimeError)              Redis answered an error (a key of the wrong type...)
    ├── SerializationError (TypeError)           a value cannot be stored (args, result, payload)
    │   └── InvalidValue (ValueError)              refused at a boundary: not UTF-8, too deep, too large
    ├── JobError
    │   ├── JobNotFound (LookupError)
    │   ├── JobTimeout (TimeoutError)
    │   ├── UnsafeJob                              pickled job refused by a worker not told to accept pickle
    │   └── InvalidJob (ValueError)                malformed job hash or function that cannot be imported
    ├── TaskDefinitionError (ValueError)         invalid scheduled-task definitions (carries every problem)
    │   └── InvalidSchedule                        a cron or interval string that does not parse
    ├── TaskNotFound (LookupError)
    ├── DuplicateTask (ValueError)
    ├── FunctionNotAllowed (PermissionError)    a function outside the API's allow-list
    └── WorkerHookError (RuntimeError)          a worker's on_startup hook failed: the worker stops

Outcomes that are not errors (a job's status, a misfire decision) are enums, not exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AsyncschedError",
    "BackendUnavailable",
    "ConfigurationError",
    "DuplicateTask",
    "FunctionNotAllowed",
    "InvalidJob",
    "InvalidSchedule",
    "InvalidValue",
    "JobError",
    "JobNotFound",
    "JobTimeout",
    "Problem",
    "RedisRefused",
    "SerializationError",
    "TaskDefinitionError",
    "TaskNotFound",
    "UnsafeJob",
    "UnsupportedURL",
    "WorkerHookError",
]


class AsyncschedError(Exception):
    """Root of every exception raised by asyncsched."""


class ConfigurationError(AsyncschedError, ValueError):
    """A setting is invalid; the message names the setting and the fix."""


class UnsupportedURL(ConfigurationError):
    """A Redis or database URL uses a scheme asyncsched does not serve."""


class BackendUnavailable(AsyncschedError, ConnectionError):
    """Redis or the SQL database cannot be reached; the message names host and port, password masked."""


class RedisRefused(AsyncschedError, RuntimeError):
    """Redis answered an operation with an error reply that is not a lost connection, e.g. ``WRONGTYPE``:
    a key holds data of the wrong type (written by hand, or by another program). The message names the key
    when it is known. Only the operation concerned fails; the API answers 503 with the message."""


class SerializationError(AsyncschedError, TypeError):
    """A value (job arguments, a result, an event payload) cannot be serialized; nothing was written."""


class InvalidValue(SerializationError, ValueError):
    """A value refused where it enters asyncsched (API, enqueue, publish): text that is not valid UTF-8
    (a lone surrogate), nesting deeper than allowed, or more bytes than the configured limit.

    ``field`` names where (``"kwargs.to"``, ``"payload.items.3"``); ``reason`` says what is wrong.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class JobError(AsyncschedError):
    """Base class of errors about one job."""


class JobNotFound(JobError, LookupError):
    """No job with this id exists (it never did, or its TTL expired)."""


class JobTimeout(JobError, TimeoutError):
    """A job ran longer than its timeout."""


class UnsafeJob(JobError):
    """A job is serialized with pickle and this worker was not configured to accept pickle."""


class InvalidJob(JobError, ValueError):
    """A job hash is malformed, or its function cannot be imported."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a task definition: where it is and what is wrong."""

    message: str
    file: str | None = None
    line: int | None = None
    task: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        parts = [where] if where else []
        if self.task:
            parts.append(f"task {self.task!r}")
        if self.field:
            parts.append(f"field {self.field!r}")
        prefix = ", ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class TaskDefinitionError(AsyncschedError, ValueError):
    """One or more scheduled-task definitions are invalid. ``problems`` lists every one."""

    def __init__(self, problems: list[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        self.problems: list[Problem] = problems
        super().__init__("\n".join(str(p) for p in problems))


class InvalidSchedule(TaskDefinitionError):
    """A cron expression or interval string does not parse, or describes no time at all."""


class TaskNotFound(AsyncschedError, LookupError):
    """No scheduled task with this id or name."""


class DuplicateTask(AsyncschedError, ValueError):
    """A scheduled task with this name already exists for this agent."""


class FunctionNotAllowed(AsyncschedError, PermissionError):
    """The function is not on the configured allow-list, so the API refuses to schedule or enqueue it."""


class WorkerHookError(AsyncschedError, RuntimeError):
    """A worker's ``on_startup`` hook raised: the worker does not start (the message names the hook)."""
