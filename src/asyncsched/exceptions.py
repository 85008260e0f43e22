"""Every exception asyncsched raises, rooted at :class:`AsyncschedError`.

::

    AsyncschedError
    ├── ConfigurationError (ValueError)          bad settings, unknown URL scheme
    │   ├── UnsupportedURL                         a URL whose scheme we do not serve
    │   └── ClusterUnsupported                     a feature whose keys span queues, on a Redis Cluster
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
    │   ├── InvalidSchedule                        a cron or interval string that does not parse
    │   └── BrokenTask                             a stored task row that cannot be read or run as it is
    ├── TaskNotFound (LookupError)
    ├── DuplicateTask (ValueError)
    ├── FunctionNotAllowed (PermissionError)    a function outside the API's allow-list
    ├── WorkerHookError (RuntimeError)          a worker's on_startup hook failed: the worker stops
    ├── MalformedEvent (ValueError)              a bus message that is not a valid event envelope
    ├── ExecutionNotFound (LookupError)          no execution (history row) with this id
    ├── EventNotFound (LookupError)              no persisted event with this id
    ├── MigrationError (RuntimeError)            the database schema cannot be brought to the models'
    ├── ComponentUnavailable                     the API needs a component that cannot start (503)
    ├── ValidationFailed                         request fields are invalid; ``errors`` lists each (422)
    └── Conflict                                 an action the current state does not allow (API 409,
                                                 CLI exit 1; ``Refused`` is its CLI name)

Outcomes that are not errors (a job's status, a misfire decision) are enums, not exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AsyncschedError",
    "BackendUnavailable",
    "BrokenTask",
    "ClusterUnsupported",
    "ComponentUnavailable",
    "ConfigurationError",
    "Conflict",
    "DuplicateTask",
    "EventNotFound",
    "ExecutionNotFound",
    "FunctionNotAllowed",
    "InvalidJob",
    "InvalidSchedule",
    "InvalidValue",
    "JobError",
    "JobNotFound",
    "JobTimeout",
    "MalformedEvent",
    "MigrationError",
    "Problem",
    "RedisRefused",
    "SerializationError",
    "TaskDefinitionError",
    "TaskNotFound",
    "UnsafeJob",
    "UnsupportedURL",
    "ValidationFailed",
    "WorkerHookError",
]


class AsyncschedError(Exception):
    """Root of every exception raised by asyncsched."""


class ConfigurationError(AsyncschedError, ValueError):
    """A setting is invalid; the message names the setting and the fix."""


class UnsupportedURL(ConfigurationError):
    """A Redis or database URL uses a scheme asyncsched does not serve."""


class ClusterUnsupported(ConfigurationError):
    """A feature whose keys span queues, asked for on a Redis Cluster (where every script touches one
    queue's hash slot): dependencies on a job of another queue, RQ 3 rate limits, flow limits, waiting for
    replicas. Refused before anything is written (docs/architecture.md, "Redis Cluster")."""


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
    """The YAML file the definition came from (``None`` for the API and code)."""
    line: int | None = None
    """1-based line in ``file`` of the offending value."""
    task: str | None = None
    """The task's name, when the definition has one."""
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


class BrokenTask(TaskDefinitionError):
    """A stored task row cannot be enabled or run as it is: a column that cannot be read (invalid JSON or
    text, edited by hand), a schedule that no longer parses, a function the allow-list now refuses.
    ``problems`` name each field. Deleting and disabling such a task always work."""


class TaskNotFound(AsyncschedError, LookupError):
    """No scheduled task with this id or name."""


class DuplicateTask(AsyncschedError, ValueError):
    """A scheduled task with this name already exists for this agent."""


class FunctionNotAllowed(AsyncschedError, PermissionError):
    """The function is not on the configured allow-list, so the API refuses to schedule or enqueue it."""


class WorkerHookError(AsyncschedError, RuntimeError):
    """A worker's ``on_startup`` hook raised: the worker does not start (the message names the hook)."""


class MalformedEvent(AsyncschedError, ValueError):
    """A message on the bus is not a valid event envelope (the message names the field or the limit).

    Readers skip such a message (logged; a durable one goes to the dead-letter stream): it never reaches
    a callback and never stops a reader."""


class ExecutionNotFound(AsyncschedError, LookupError):
    """No execution with this id, and no job with this id in the history."""


class EventNotFound(AsyncschedError, LookupError):
    """No persisted event with this id."""


class MigrationError(AsyncschedError, RuntimeError):
    """The database's schema cannot be brought to the models' (the message says what differs)."""


class ComponentUnavailable(AsyncschedError):
    """A component the request needs is not installed or could not start (answered 503)."""


class ValidationFailed(AsyncschedError):
    """One or more request fields are invalid; ``errors`` lists each one (answered 422).

    Each error is ``{"loc": ["body", "schedule"], "msg": "...", "type": "value_error"}``."""

    def __init__(self, errors: Sequence[dict[str, Any]]) -> None:
        self.errors: list[dict[str, Any]] = list(errors)
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in self.errors))


class Conflict(AsyncschedError):
    """The action conflicts with the current state (the API answers 409, the CLI exits 1)."""
