"""The job hash ``<p>:job:<id>``: every field name (RQ's and asyncsched's own) and their codec, in one place.

Written by ``TaskQueue`` (the fields jobs share: :func:`shared_fields`; per-job ones by ``enqueue.lua``),
claimed by ``claim.lua`` (which returns the fields the worker reads: :data:`CLAIMED_FIELDS`) and read back by
``JobRecord.from_hash`` and the worker through :class:`JobHash`. The Lua scripts spell the same names.
Verified against rq 2.12.0 and 3.0.0 (``rq.job.Job.to_dict``); RQ ignores the ``asyncsched_*`` fields.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime

from . import codec

__all__ = ["CLAIMED_FIELDS", "JOB_FIELDS", "RQ_JOB_FIELDS", "RQ_STATUSES", "JobField", "JobHash", "RQStatus"]


class JobField(enum.StrEnum):
    """A field of the job hash."""

    # RQ's (rq.job.Job.to_dict, in its order)
    DATA = "data"
    CREATED_AT = "created_at"
    STATUS = "status"
    SUCCESS_CALLBACK_NAME = "success_callback_name"
    FAILURE_CALLBACK_NAME = "failure_callback_name"
    STOPPED_CALLBACK_NAME = "stopped_callback_name"
    STARTED_AT = "started_at"
    ENDED_AT = "ended_at"
    LAST_HEARTBEAT = "last_heartbeat"
    WORKER_NAME = "worker_name"
    GROUP_ID = "group_id"
    ORIGIN = "origin"
    DESCRIPTION = "description"
    ENQUEUED_AT = "enqueued_at"
    TIMEOUT = "timeout"
    RESULT_TTL = "result_ttl"
    FAILURE_TTL = "failure_ttl"
    TTL = "ttl"
    META = "meta"
    RETRIES_LEFT = "retries_left"
    RETRY_INTERVALS = "retry_intervals"
    ENQUEUE_AT_FRONT_ON_RETRY = "enqueue_at_front_on_retry"
    SUCCESS_CALLBACK_TIMEOUT = "success_callback_timeout"
    FAILURE_CALLBACK_TIMEOUT = "failure_callback_timeout"
    STOPPED_CALLBACK_TIMEOUT = "stopped_callback_timeout"
    DEPENDENCY_ID = "dependency_id"
    DEPENDENCY_IDS = "dependency_ids"
    ALLOW_DEPENDENCY_FAILURES = "allow_dependency_failures"
    ENQUEUE_AT_FRONT = "enqueue_at_front"
    REPEATS_LEFT = "repeats_left"
    REPEAT_INTERVALS = "repeat_intervals"
    RATE_LIMIT_KEY = "rate_limit_key"
    RATE_LIMIT_CONCURRENCY = "rate_limit_concurrency"
    WEBHOOKS = "webhooks"  # RQ 3's Webhook: read only to refuse the job (asyncsched's worker lacks it)
    # asyncsched's own (RQ ignores fields it does not know)
    FUNCTION_PATH = "asyncsched_function_path"
    ATTEMPT = "asyncsched_attempt"
    AGENT = "asyncsched_agent"
    TASK = "asyncsched_task"
    SCHEDULED_TASK = "asyncsched_scheduled_task"
    RETRY = "asyncsched_retry"  # backoff / exception filter policy (JSON)
    LIMITS = "asyncsched_limits"  # flow limits (lib_limits.lua)
    RUN_AT = "asyncsched_run_at"  # exact run-at of a scheduled job (epoch ms)


JOB_FIELDS: tuple[str, ...] = tuple(JobField)
"""Every hash field asyncsched writes or reads."""

RQ_JOB_FIELDS: tuple[str, ...] = tuple(f for f in JobField if not f.startswith("asyncsched_"))
"""The fields RQ itself writes that we write or read."""

CLAIMED_FIELDS: tuple[str, ...] = tuple(
    f.value
    for f in (
        *(JobField.ATTEMPT, JobField.AGENT, JobField.TASK, JobField.FUNCTION_PATH, JobField.SCHEDULED_TASK),
        *(JobField.DESCRIPTION, JobField.STATUS, JobField.LIMITS, JobField.RATE_LIMIT_KEY),
        *(JobField.RATE_LIMIT_CONCURRENCY, JobField.DATA, JobField.TIMEOUT, JobField.RESULT_TTL),
        *(JobField.FAILURE_TTL, JobField.RETRIES_LEFT, JobField.RETRY_INTERVALS),
        *(JobField.ENQUEUE_AT_FRONT_ON_RETRY, JobField.RETRY, JobField.META, JobField.ENQUEUED_AT),
        *(JobField.WEBHOOKS, JobField.SUCCESS_CALLBACK_NAME, JobField.FAILURE_CALLBACK_NAME),
        *(JobField.STOPPED_CALLBACK_NAME, JobField.SUCCESS_CALLBACK_TIMEOUT),
        *(JobField.FAILURE_CALLBACK_TIMEOUT, JobField.STOPPED_CALLBACK_TIMEOUT),
        *(JobField.REPEATS_LEFT, JobField.REPEAT_INTERVALS),
    )
)
"""The job-hash fields ``claim.lua`` returns to the worker (its ``claimed_slots``, in that order), those set
to ``''`` left out but ``data``: every field the worker reads to run a job, its callbacks, hooks, metrics
and spans. The whole hash is read only when a job asks for it (``current_job().hash``, ``rq_job()``)."""


class RQStatus(enum.StrEnum):
    """The ``status`` field: ``rq.job.JobStatus`` (2.x and 3.0; ``rate_limited`` is RQ 3's)."""

    CREATED = "created"
    QUEUED = "queued"
    FINISHED = "finished"
    FAILED = "failed"
    STARTED = "started"
    DEFERRED = "deferred"
    SCHEDULED = "scheduled"
    STOPPED = "stopped"
    CANCELED = "canceled"
    RATE_LIMITED = "rate_limited"


RQ_STATUSES: tuple[str, ...] = tuple(RQStatus)


class JobHash:
    """A job hash as read (``HGETALL``), keyed by text, with typed accessors."""

    __slots__ = ("raw",)

    def __init__(self, raw: Mapping[bytes, bytes] | Mapping[str, bytes]) -> None:
        self.raw: dict[str, bytes] = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}

    def get(self, name: JobField) -> bytes | None:
        return self.raw.get(name)

    def text(self, name: JobField) -> str | None:
        """The field as text (``None`` when absent or empty)."""
        v = self.raw.get(name)
        return v.decode(errors="replace") if v else None

    def integer(self, name: JobField) -> int | None:
        """The field as an integer (``None`` when absent, empty or not a number)."""
        v = self.text(name)
        try:
            return int(v) if v is not None else None
        except ValueError:
            return None

    def ts(self, name: JobField) -> datetime | None:
        """A timestamp field (RQ's text)."""
        return codec.parse_ts(self.raw.get(name))

    @property
    def attempt(self) -> int:
        """Which attempt of the job this is (1 for a job RQ enqueued)."""
        return self.integer(JobField.ATTEMPT) or 1
