"""The job model in the spec's vocabulary: :class:`JobStatus`, :class:`Retry`, :class:`JobRecord`."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..exceptions import InvalidJob, UnsafeJob
from ..rq import codec
from ..rq.codec import ResultEntry, ResultType
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


class Callback:
    """A job callback (like ``rq.Callback``): ``func`` is a module-level function or a
    ``"module:function"`` path, run by the worker with RQ's signature (``on_success(job, connection,
    result)``, ``on_failure(job, connection, type, value, traceback)``, ``on_stopped(job, connection)``)
    within ``timeout`` seconds (RQ's default, 60)."""

    def __init__(self, func: Callable[..., Any] | str, timeout: int | None = None) -> None:
        if timeout is not None and timeout < 1:
            raise ValueError(f"Callback timeout must be a whole number of seconds >= 1, got {timeout!r}")
        self.func = func
        self.timeout = timeout

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


class RateLimit:
    """At most ``concurrency`` jobs with this ``key`` queued or running at once (like RQ 3's
    ``rq.RateLimit``, same keys: our workers and RQ's share the limit); the others wait as
    ``rate_limited`` (:attr:`JobStatus.DEFERRED`) for a slot."""

    def __init__(self, key: str, concurrency: int) -> None:
        if not key:
            raise ValueError("RateLimit key must be a non-empty string")
        if concurrency < 1:
            raise ValueError(f"RateLimit concurrency must be an integer >= 1, got {concurrency!r}")
        self.key = key
        self.concurrency = concurrency

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
    task_name: str | None = None
    scheduled_task_id: str | None = None
    created_at: datetime | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    worker_name: str | None = None
    result: Any = None
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
    ) -> JobRecord:
        """Build from ``HGETALL <p>:job:<id>`` and the latest result entry. Pickled payloads are only
        decoded when ``accept_pickle``; otherwise args/kwargs are empty and the function comes from the
        description."""
        h = codec.text_hash(raw)

        def s(name: str) -> str | None:
            v = h.get(name)
            return v.decode(errors="replace") if v else None

        def i(name: str) -> int | None:
            v = s(name)
            try:
                return int(v) if v is not None else None
            except ValueError:
                return None

        description = s("description")
        function = s("asyncsched_function_path") or (description or "").split("(", 1)[0]
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        fmt: str | None = None
        if h.get("data"):
            try:
                function, args, kwargs, fmt = codec.decode_data(h["data"], accept_pickle=accept_pickle)
            except UnsafeJob:
                fmt = "pickle"
            except Exception:  # a malformed payload still shows as a record
                fmt = None
        meta: dict[str, Any] = {}
        if h.get("meta"):
            try:
                from ..rq import serializers

                value, _ = serializers.loads(h["meta"], accept_pickle=accept_pickle)
                meta = value if isinstance(value, dict) else {"value": value}
            except Exception:
                meta = {}
        rq_status = s("status") or "created"
        status = from_rq_status(rq_status)
        result = error = tb = None
        if latest is not None:
            if latest.type == ResultType.SUCCESSFUL:
                try:
                    result = latest.value(accept_pickle=accept_pickle)
                except Exception:
                    result = None
            elif latest.exc_string:
                tb = latest.exc_string
                lines = [ln for ln in tb.strip().splitlines() if ln.strip()]
                error = lines[-1] if lines else tb
        retries_left = i("retries_left")
        return cls(
            id=job_id,
            function=function,
            args=list(args),
            kwargs=kwargs,
            status=status,
            queue=s("origin") or "default",
            agent_name=s("asyncsched_agent"),
            task_name=s("asyncsched_task"),
            scheduled_task_id=s("asyncsched_scheduled_task"),
            created_at=codec.parse_ts(h.get("created_at")),
            enqueued_at=codec.parse_ts(h.get("enqueued_at")),
            started_at=codec.parse_ts(h.get("started_at")),
            ended_at=codec.parse_ts(h.get("ended_at")),
            worker_name=s("worker_name"),
            result=result,
            error=error,
            traceback=tb,
            retries_left=retries_left,
            meta=meta,
            timeout=i("timeout"),
            description=description,
            attempt=i("asyncsched_attempt") or 1,
            function_path=s("asyncsched_function_path"),
            rq_status=rq_status,
            serializer=str(fmt) if fmt else None,
            progress=meta.get("progress"),
        )


def parse_intervals(raw: bytes | None) -> list[int] | None:
    """``retry_intervals`` (JSON list) or ``None``."""
    if not raw:
        return None
    value = json.loads(raw)
    return [int(v) for v in value] if isinstance(value, list) else None
