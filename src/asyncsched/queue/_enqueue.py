"""Preparing jobs for ``enqueue.lua``: validate and serialize one job's options (:class:`EnqueueOptions`)
into the header it shares with like jobs and its own values, and lay prepared jobs out as the script's
segments (:func:`segments`). Nothing here touches Redis; :class:`~asyncsched.queue.TaskQueue` sends them.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from .. import _tracing
from .._boundary import check_job_args
from .._lifecycle import pack
from ..config import Settings
from ..exceptions import InvalidJob
from ..rq import codec, serializers
from ..rq.jobhash import JobField as F
from ..rq.jobhash import RQStatus
from ..rq.serializers import Format
from ._functions import func_name
from ._limits import Limit, limits_field
from ._models import Callback, RateLimit, Repeat, Retry

__all__ = ["ENQUEUE_OPTIONS", "JOB_ID", "EnqueueOptions", "Part", "Preparer", "segments", "uuid4_text"]

JOB_ID = re.compile(r"\A[A-Za-z0-9_-]+\Z")
Part = tuple[tuple[str, ...], list[Any]]  # a prepared job: the header it shares with like jobs, its values
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Mode(enum.StrEnum):
    """What ``enqueue.lua`` does when the job's id exists already."""

    UNIQUE = "1"  # unique=True: write nothing, keep the existing job
    REPLACE = "0"  # a caller's id: replace the job
    FRESH = "n"  # an id generated here: it cannot exist


@dataclass(slots=True)
class EnqueueOptions:
    """The keyword arguments of :meth:`TaskQueue.enqueue <asyncsched.queue.TaskQueue.enqueue>` (documented
    there), as one record: what ``enqueue`` and each job of ``enqueue_many`` are prepared from."""

    func: Callable[..., Any] | str | None = None
    agent_name: str | None = None
    task_name: str | None = None
    function_path: str | None = None
    args: Iterable[Any] = ()
    kwargs: Mapping[str, Any] | None = None
    queue: str | None = None
    job_id: str | None = None
    timeout: int | float | timedelta | None = None
    result_ttl: int | None = None
    ttl: int | None = None
    failure_ttl: int | None = None
    retry: Retry | int | None = None
    at: datetime | None = None
    delay: float | timedelta | None = None
    meta: Mapping[str, Any] | None = None
    description: str | None = None
    scheduled_task_id: str | None = None
    unique: bool = False
    at_front: bool = False
    depends_on: str | Iterable[str] | None = None
    allow_dependency_failures: bool = False
    on_success: Callback | Callable[..., Any] | str | None = None
    on_failure: Callback | Callable[..., Any] | str | None = None
    on_stopped: Callback | Callable[..., Any] | str | None = None
    repeat: Repeat | None = None
    rate_limit: RateLimit | str | None = None
    concurrency_key: str | None = None
    max_concurrency: int | None = None


ENQUEUE_OPTIONS = frozenset(f.name for f in fields(EnqueueOptions))


def segments(parts: list[Part]) -> list[Any]:
    """``enqueue.lua``'s segments: runs of jobs with the same header become one segment."""
    out: list[Any] = []
    header: tuple[str, ...] | None = None
    count_at = 0
    for part_header, values in parts:
        if part_header is not header and part_header != header:
            header = part_header
            out += header
            out.append(0)
            count_at = len(out) - 1
        out[count_at] += 1
        out += values
    return out


class Preparer:
    """Prepares jobs of one queue object: its settings, serializer, flow-limit policies, and a cache of
    headers (jobs with the same options share one) and of the timestamp text of the batch."""

    ids = JOB_ID  # what a job id given by the caller (or a dependency's) may look like

    def __init__(
        self, settings: Settings, serializer: Format, default_queue: str, limits: Mapping[str, Limit]
    ) -> None:
        self.settings = settings
        self.serializer = serializer
        self.default_queue = default_queue
        self.limits = limits
        self._ts_for: datetime | None = None
        self._ts = ""
        self._epoch = ""
        self._headers: dict[tuple[Any, ...], tuple[str, ...]] = {}  # Shared's fields -> script header

    def prepare(self, now: datetime, o: EnqueueOptions) -> tuple[str, Part]:
        """The job id and prepared job of ``o``; raises (``InvalidJob``, a serializer error) before any
        write."""
        target = o.func if o.func is not None else o.function_path
        if target is None:
            raise InvalidJob("enqueue needs a function (func=...) or a function_path")
        name = func_name(target)
        path = o.function_path or (target if isinstance(target, str) else name)
        args, kwargs = tuple(o.args), dict(o.kwargs or {})
        qname, job_id, fresh = self._identify(o)
        raw = serializers.dumps((name, None, args, kwargs), self.serializer)  # raises before any write
        check_job_args(
            args, kwargs, raw, self.settings.max_args_bytes, json_ascii=self.serializer == Format.JSON
        )
        data = codec.pack_data(raw)  # codec.encode_data, with the boundary check between its two steps
        if self._ts_for is not now:  # one timestamp text per batch
            self._ts_for, self._ts, self._epoch = now, codec.fmt_ts(now), repr(now.timestamp())
        when = None if o.at is None and o.delay is None else _when(o, now)
        scheduled = when is not None and when > now
        rq_opts: tuple[tuple[str, str], ...] = ()  # the common job: no RQ feature, no flow limit, no call
        features = (o.on_success, o.on_failure, o.on_stopped, o.repeat, o.rate_limit, o.depends_on)
        if features != _NONE6 or (o.concurrency_key, o.max_concurrency) != (None, None) or self.limits:
            rq_opts = self._options(o, path, qname, kwargs, scheduled)
        description = o.description or codec.call_string(name, args, kwargs)
        meta = o.meta
        if _tracing.tracer is not None:  # off: this one check (asyncsched/_tracing.py)
            meta = _tracing.enqueue_meta(meta, name, qname, job_id)
        meta_raw = serializers.dumps(dict(meta), self.serializer) if meta else b""
        mode = _UNIQUE if o.unique else (_FRESH if fresh else _REPLACE)
        header = self._header(o, qname, scheduled, mode, bool(meta_raw), path, rq_opts)
        values: list[Any] = [job_id, data, meta_raw] if meta_raw else [job_id, data]
        values += (description, self._ts, self._epoch)
        if when is not None and scheduled:
            values.append(str(_run_at_ms(when)))
        return job_id, (header, values)

    def _identify(self, o: EnqueueOptions) -> tuple[str, str, bool]:
        """The job's queue (its name in Redis), its id and whether the id was generated here."""
        job_id, fresh = (uuid4_text(), True) if o.job_id is None and not o.unique else _job_id(o)
        return o.queue or self.default_queue, job_id, fresh

    def _options(
        self, o: EnqueueOptions, path: str, qname: str, kwargs: dict[str, Any], scheduled: bool
    ) -> tuple[tuple[str, str], ...]:
        """The hash fields of RQ's job features and of our flow limits."""
        rq_limit = o.rate_limit if not isinstance(o.rate_limit, str) else None
        if scheduled and (o.depends_on is not None or rq_limit is not None):
            raise InvalidJob("depends_on and rate_limit cannot be combined with at/delay")
        rq_opts = rq_options(o, rq_limit, self.ids)
        own = (o.rate_limit, o.concurrency_key, o.max_concurrency)
        if not self.limits and own == (None, None, None):
            return rq_opts  # no flow limit: the common case makes no call
        flow = limits_field(
            path=path,
            queue=qname,
            kwargs=kwargs,
            rate_limit=o.rate_limit if isinstance(o.rate_limit, str) else None,
            concurrency_key=o.concurrency_key,
            max_concurrency=o.max_concurrency,
            policies=self.limits,
        )
        return rq_opts if flow is None else (*rq_opts, (F.LIMITS.value, flow))

    def _header(
        self,
        o: EnqueueOptions,
        qname: str,
        scheduled: bool,
        mode: Mode,
        has_meta: bool,
        path: str,
        rq_opts: tuple[tuple[str, str], ...],
    ) -> tuple[str, ...]:
        """The header of jobs with these options (cached: most batches share a few). The cache key is a
        plain tuple of :class:`Shared`'s fields (a named tuple costs ~0.5 µs a job more to build); the
        named view is only made on a miss."""
        key = (
            qname,
            scheduled,
            mode,
            o.at_front,
            has_meta,
            path,
            _seconds(o.timeout) if o.timeout is not None else self.settings.job_timeout,
            o.result_ttl,
            o.failure_ttl,
            o.ttl,
            o.retry if o.retry is None or isinstance(o.retry, int) else o.retry.key(),
            o.agent_name,
            o.task_name,
            o.scheduled_task_id,
            rq_opts,
        )
        header = self._headers.get(key)
        if header is None:
            header = Shared._make(key).header()
            if len(self._headers) >= 256:
                self._headers.clear()
            self._headers[key] = header
        return header


class Shared(NamedTuple):
    """What jobs of one segment share: the fields of the header cache's key, named (built from a key on a
    cache miss, to write the header)."""

    qname: str
    scheduled: bool
    mode: Mode
    at_front: bool
    has_meta: bool
    path: str
    timeout: int
    result_ttl: int | None
    failure_ttl: int | None
    ttl: int | None
    retry: int | tuple[Any, ...] | None
    agent_name: str | None
    task_name: str | None
    scheduled_task_id: str | None
    rq_opts: tuple[tuple[str, str], ...] = ()

    def header(self) -> tuple[str, ...]:
        """The part of the enqueue script's arguments that jobs with these options share (see
        ``enqueue.lua``); per-job values (id, data, meta, description, timestamps) go separately."""
        status = RQStatus.SCHEDULED if self.scheduled else RQStatus.QUEUED
        fields, life = self.hash_fields(status.value)
        head = [self.qname, status.value, self.mode.value, "" if self.ttl is None else str(int(self.ttl))]
        head += ("1" if self.at_front else "0", "1" if self.has_meta else "0", str(len(fields) // 2))
        return (*head, *fields, str(len(life) // 2), *life)

    def hash_fields(self, status: str) -> tuple[list[str], list[str]]:
        """The shared hash fields (in RQ's order, see ``rq.job.Job.to_dict``; after the per-job ones, or
        before them in a run ``enqueue.lua`` copies from a template) and the shared lifecycle record
        fields (packed, :func:`asyncsched._lifecycle.pack`), each a flat list of text."""
        names = dict(self.rq_opts)
        fields = [
            F.SUCCESS_CALLBACK_NAME, names.pop(F.SUCCESS_CALLBACK_NAME, ""),
            F.FAILURE_CALLBACK_NAME, names.pop(F.FAILURE_CALLBACK_NAME, ""),
            F.STOPPED_CALLBACK_NAME, names.pop(F.STOPPED_CALLBACK_NAME, ""),
            F.STARTED_AT, "",
            F.ENDED_AT, "",
            F.LAST_HEARTBEAT, "",
            F.WORKER_NAME, "",
            F.GROUP_ID, "",
            F.ORIGIN, self.qname,
            F.TIMEOUT, str(self.timeout),
            F.STATUS, status,
            F.FUNCTION_PATH, self.path,
            F.ATTEMPT, "1",
        ]  # fmt: skip
        for name, value in (
            (F.RESULT_TTL, self.result_ttl),
            (F.FAILURE_TTL, self.failure_ttl),
            (F.TTL, self.ttl),
        ):
            if value is not None:
                fields += (name, str(int(value)))
        if self.retry is not None:
            count, intervals, policy = Retry(self.retry).key() if isinstance(self.retry, int) else self.retry
            fields += (F.RETRIES_LEFT, str(count))
            fields += (F.RETRY_INTERVALS, "[" + ", ".join(str(i) for i in intervals) + "]")
            if policy:  # backoff / exception filter: read by our worker (RQ ignores the field)
                fields += (F.RETRY, policy)
        for item in names.items():
            fields += item
        if self.at_front and (F.DEPENDENCY_IDS in names or F.RATE_LIMIT_KEY in names):
            fields += (F.ENQUEUE_AT_FRONT, "1")  # for the later push (RQ's field)
        life: list[tuple[str, str]] = [("kind", status), ("queue", self.qname), ("attempt", "1")]
        life.append(("function", self.path))
        for hash_field, life_field, text in (
            (F.AGENT, "agent_name", self.agent_name),
            (F.TASK, "task_name", self.task_name),
            (F.SCHEDULED_TASK, "scheduled_task_id", self.scheduled_task_id),
        ):
            if text is not None:
                fields += (hash_field, text)
                life.append((life_field, text))
        return [str(f) for f in fields], pack(life)  # (the script adds each job's id and time)


def _job_id(o: EnqueueOptions) -> tuple[str, bool]:
    """The job's id and whether it was generated here."""
    if o.unique and o.job_id is None:
        raise InvalidJob("unique=True needs a job_id")
    if o.job_id is None:
        return uuid4_text(), True
    if not JOB_ID.match(o.job_id):
        raise InvalidJob(f"job id {o.job_id!r} may only contain letters, digits, '_' and '-' (RQ's rule)")
    return o.job_id, False


def _when(o: EnqueueOptions, now: datetime) -> datetime | None:
    if o.at is not None:
        return o.at if o.at.tzinfo else o.at.replace(tzinfo=UTC)
    if o.delay is not None:
        seconds = o.delay.total_seconds() if isinstance(o.delay, timedelta) else float(o.delay)
        return now + timedelta(seconds=seconds)
    return None


def uuid4_text() -> str:
    """``str(uuid.uuid4())``, without the cost of building a ``UUID`` object."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def _seconds(value: int | float | timedelta) -> int:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds == -1:
        return -1
    if seconds <= 0:
        raise InvalidJob(f"timeout must be positive seconds (or -1 for none), got {value!r}")
    return math.ceil(seconds)


_NONE6 = (None,) * 6
_UNIQUE, _FRESH, _REPLACE = Mode.UNIQUE, Mode.FRESH, Mode.REPLACE  # module globals: cheaper than Mode.X


def rq_options(
    o: EnqueueOptions, rate_limit: RateLimit | None, ids: re.Pattern[str] = JOB_ID
) -> tuple[tuple[str, str], ...]:
    """The RQ job hash fields (name, text) of these options, validated (``ids``: what a dependency's id
    may look like); hashable, for the header cache."""
    out: list[tuple[str, str]] = []
    for kind, cb in (("success", o.on_success), ("failure", o.on_failure), ("stopped", o.on_stopped)):
        if cb is None:
            continue
        if not isinstance(cb, Callback):
            cb = Callback(cb)
        out.append((f"{kind}_callback_name", func_name(cb.func)))
        if cb.timeout is not None:
            out.append((f"{kind}_callback_timeout", str(cb.timeout)))
    if o.repeat is not None:
        if not isinstance(o.repeat, Repeat):
            raise InvalidJob(f"repeat must be asyncsched.queue.Repeat, got {type(o.repeat).__name__}")
        out += [(F.REPEATS_LEFT, str(o.repeat.times)), (F.REPEAT_INTERVALS, json.dumps(o.repeat.intervals))]
    if rate_limit is not None:
        if not isinstance(rate_limit, RateLimit):
            raise InvalidJob(
                f"rate_limit must be asyncsched.queue.RateLimit or a rate text such as '60/m', "
                f"got {type(rate_limit).__name__}"
            )
        out += [(F.RATE_LIMIT_KEY, rate_limit.key), (F.RATE_LIMIT_CONCURRENCY, str(rate_limit.concurrency))]
    if o.depends_on is not None:
        deps = [o.depends_on] if isinstance(o.depends_on, str) else list(o.depends_on)
        bad = [i for i in deps if not ids.match(str(i))]
        if not deps or bad:
            raise InvalidJob(f"depends_on must be one or more job ids, got {o.depends_on!r}")
        out += [(F.DEPENDENCY_ID, deps[0]), (F.DEPENDENCY_IDS, json.dumps(deps))]
        out.append((F.ALLOW_DEPENDENCY_FAILURES, "1" if o.allow_dependency_failures else "0"))
    return tuple((str(k), v) for k, v in out)


def _run_at_ms(when: datetime) -> int:
    """Epoch milliseconds of ``when``, rounded up (a job never starts before the time asked for)."""
    micros = (when - _EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1000)
