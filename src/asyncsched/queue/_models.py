"""The job model in the spec's vocabulary: :class:`JobStatus`, :class:`Retry`, :class:`JobRecord`."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..exceptions import InvalidJob, UnsafeJob
from ..rq import codec, serializers
from ..rq.codec import ResultEntry, ResultType
from ..rq.jobhash import JobField as F
from ..rq.jobhash import JobHash
from ..rq.slots import untagged
from ._retry import Retry

__all__ = [
    "Callback",
    "JobRecord",
    "JobStatus",
    "RateLimit",
    "Repeat",
    "Retry",
    "WorkerInfo",
    "from_rq_status",
]


class JobStatus(enum.StrEnum):
    """A job's state in the spec's vocabulary; RQ's statuses map onto it (:func:`from_rq_status`)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SCHEDULED = "scheduled"
    DEFERRED = "deferred"


_FROM_RQ = {
    "created": JobStatus.QUEUED,
    "queued": JobStatus.QUEUED,
    "started": JobStatus.RUNNING,
    "finished": JobStatus.SUCCESS,
    "failed": JobStatus.FAILED,
    "stopped": JobStatus.CANCELLED,
    "canceled": JobStatus.CANCELLED,
    "scheduled": JobStatus.SCHEDULED,
    "deferred": JobStatus.DEFERRED,
    "rate_limited": JobStatus.DEFERRED,  # RQ 3: waiting for a slot of its RateLimit
}

TO_RQ: Mapping[JobStatus, tuple[str, ...]] = {
    JobStatus.QUEUED: ("queued", "created"),
    JobStatus.RUNNING: ("started",),
    JobStatus.SUCCESS: ("finished",),
    JobStatus.FAILED: ("failed",),
    JobStatus.CANCELLED: ("canceled", "stopped"),
    JobStatus.SCHEDULED: ("scheduled",),
    JobStatus.DEFERRED: ("deferred", "rate_limited"),
}


def from_rq_status(value: str | bytes | None) -> JobStatus:
    """Map RQ's status text (``stopped`` is a cancellation from RQ's side; RQ 3's ``rate_limited`` waits
    for a slot, like a deferred job for its dependencies). Text that neither RQ 2.x/3.x nor asyncsched
    writes raises ``InvalidJob`` naming it, rather than being guessed at."""
    text = value.decode() if isinstance(value, bytes) else (value or "")
    try:
        return _FROM_RQ[text]
    except KeyError:
        raise InvalidJob(
            f"unknown RQ job status {text!r} (not one RQ 2.x/3.x or asyncsched writes: "
            + ", ".join(_FROM_RQ)
            + ")"
        ) from None


@dataclass(eq=False, repr=False)
class Callback:
    """A job callback (like ``rq.Callback``): ``func`` is a module-level function or a
    ``"module:function"`` path, run by the worker with RQ's signature (``on_success(job, connection,
    result)``, ``on_failure(job, connection, type, value, traceback)``, ``on_stopped(job, connection)``)
    within ``timeout`` seconds (RQ's default, 60)."""

    func: Callable[..., Any] | str
    timeout: int | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout < 1:
            raise ValueError(f"Callback timeout must be a whole number of seconds >= 1, got {self.timeout!r}")

    def __repr__(self) -> str:
        return f"Callback({self.func!r}, timeout={self.timeout})"


class Repeat:
    """Run a successful job ``times`` more times (like ``rq.Repeat``), waiting ``interval`` seconds before
    each repeat (a list: one value per repeat, the last one reused)."""

    def __init__(self, times: int, interval: int | list[int] = 0) -> None:
        if times < 1:
            raise ValueError(f"Repeat(times=...) must be at least 1, got {times!r}")
        intervals = [interval] if isinstance(interval, int) else list(interval)
        if not intervals or any(i < 0 for i in intervals):
            raise ValueError(f"repeat intervals must be non-negative integers, got {interval!r}")
        self.times = times
        self.intervals = intervals

    def __repr__(self) -> str:
        return f"Repeat(times={self.times}, interval={self.intervals})"


@dataclass(eq=False, repr=False)
class RateLimit:
    """At most ``concurrency`` jobs with this ``key`` queued or running at once (like RQ 3's
    ``rq.RateLimit``, same keys: our workers and RQ's share the limit); the others wait as
    ``rate_limited`` (:attr:`JobStatus.DEFERRED`) for a slot."""

    key: str
    concurrency: int

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("RateLimit key must be a non-empty string")
        if self.concurrency < 1:
            raise ValueError(f"RateLimit concurrency must be an integer >= 1, got {self.concurrency!r}")

    def __repr__(self) -> str:
        return f"RateLimit({self.key!r}, concurrency={self.concurrency})"


def retry_interval(intervals: list[int] | None, retries_left: int) -> int:
    """RQ's ``Job.get_retry_interval``: which interval applies with ``retries_left`` retries left."""
    if not intervals:
        return 0
    return intervals[max(len(intervals) - retries_left, 0)]


@dataclass
class WorkerInfo:
    """A worker as registered in RQ's keys (ours or RQ's own)."""

    name: str
    queues: list[str]
    state: str
    last_heartbeat: datetime | None
    birth: datetime | None
    current_jobs: list[str]
    successful_job_count: int
    failed_job_count: int
    total_working_time: float
    hostname: str | None = None
    pid: int | None = None
    version: str | None = None


@dataclass
class JobRecord:
    """The full view of one job (hash, latest result and our extra fields)."""

    id: str
    function: str
    args: list[Any] | tuple[Any, ...]
    kwargs: dict[str, Any]
    status: JobStatus
    queue: str
    agent_name: str | None = None
    """The agent the job was enqueued for (``agent_name=`` of ``enqueue``)."""
    task_name: str | None = None
    scheduled_task_id: str | None = None
    """The scheduled task whose tick enqueued this job, if any."""
    created_at: datetime | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    worker_name: str | None = None
    """The worker that ran (or runs) the job."""
    result: Any = None
    """The return value of a finished job (from RQ's results stream, or the hash for RQ < 1.12)."""
    error: str | None = None
    traceback: str | None = None
    retries_left: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    timeout: int | None = None
    description: str | None = None
    attempt: int = 1
    function_path: str | None = None
    rq_status: str = ""
    serializer: str | None = None
    progress: Any = None  # what the job reported with current_job().progress(): meta["progress"]

    @classmethod
    def from_hash(
        cls,
        job_id: str,
        raw: Mapping[bytes, bytes],
        latest: ResultEntry | None,
        *,
        accept_pickle: bool,
        cluster: bool = False,
    ) -> JobRecord:
        """Build from ``HGETALL <p>:job:<id>`` and the latest result entry. Pickled payloads are only
        decoded when ``accept_pickle``; otherwise args/kwargs are empty and the function comes from the
        description. ``cluster``: the queue and worker names lose the tag they have in Redis there."""
        h = JobHash(raw)
        description = h.text(F.DESCRIPTION)
        function, args, kwargs, fmt = _payload(h, description, accept_pickle)
        meta = _meta(h, accept_pickle)
        rq_status = h.text(F.STATUS) or "created"
        result, error, tb = _outcome(latest, accept_pickle)
        origin, worker = h.text(F.ORIGIN), h.text(F.WORKER_NAME)
        if cluster:
            origin, worker = untagged(origin), untagged(worker)
        return cls(
            id=job_id,
            function=function,
            args=list(args),
            kwargs=kwargs,
            status=from_rq_status(rq_status),
            queue=origin or "default",
            agent_name=h.text(F.AGENT),
            task_name=h.text(F.TASK),
            scheduled_task_id=h.text(F.SCHEDULED_TASK),
            created_at=h.ts(F.CREATED_AT),
            enqueued_at=h.ts(F.ENQUEUED_AT),
            started_at=h.ts(F.STARTED_AT),
            ended_at=h.ts(F.ENDED_AT),
            worker_name=worker,
            result=result,
            error=error,
            traceback=tb,
            retries_left=h.integer(F.RETRIES_LEFT),
            meta=meta,
            timeout=h.integer(F.TIMEOUT),
            description=description,
            attempt=h.attempt,
            function_path=h.text(F.FUNCTION_PATH),
            rq_status=rq_status,
            serializer=str(fmt) if fmt else None,
            progress=meta.get("progress"),
        )


def _payload(
    h: JobHash, description: str | None, accept_pickle: bool
) -> tuple[str, tuple[Any, ...], dict[str, Any], str | None]:
    """Function, args, kwargs and serializer of a job hash; a payload that cannot be decoded (refused
    pickle, malformed) leaves the function from our field or the description, and no arguments."""
    function = h.text(F.FUNCTION_PATH) or (description or "").split("(", 1)[0]
    data = h.get(F.DATA)
    if not data:
        return function, (), {}, None
    try:
        function, args, kwargs, fmt = codec.decode_data(data, accept_pickle=accept_pickle)
    except UnsafeJob:
        return function, (), {}, "pickle"
    except Exception:  # a malformed payload still shows as a record
        return function, (), {}, None
    return function, args, kwargs, fmt


def _meta(h: JobHash, accept_pickle: bool) -> dict[str, Any]:
    raw = h.get(F.META)
    if not raw:
        return {}
    try:
        value, _ = serializers.loads(raw, accept_pickle=accept_pickle)
    except Exception:
        return {}
    return value if isinstance(value, dict) else {"value": value}


def _outcome(latest: ResultEntry | None, accept_pickle: bool) -> tuple[Any, str | None, str | None]:
    """Result, error line and traceback of the latest result entry."""
    if latest is None:
        return None, None, None
    if latest.type == ResultType.SUCCESSFUL:
        try:
            return latest.value(accept_pickle=accept_pickle), None, None
        except Exception:
            return None, None, None
    if not latest.exc_string:
        return None, None, None
    tb = latest.exc_string
    lines = [ln for ln in tb.strip().splitlines() if ln.strip()]
    return None, (lines[-1] if lines else tb), tb


def parse_intervals(raw: bytes | None) -> list[int] | None:
    """``retry_intervals`` (JSON list) or ``None``."""
    if not raw:
        return None
    value = json.loads(raw)
    return [int(v) for v in value] if isinstance(value, list) else None
