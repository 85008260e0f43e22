"""``TaskQueue``: enqueue jobs in python-rq's format and read their state, results and workers."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import _tracing
from .._boundary import check_job_args
from .._keys import lifecycle_stream
from .._misuse import async_api
from .._redis import create_redis
from .._redis.connection import Line
from ..config import Settings, get_settings
from ..exceptions import BackendUnavailable, InvalidJob, JobError, JobNotFound, RedisRefused
from ..rq import codec, serializers
from ..rq._scripts import Scripts
from ..rq.codec import ResultEntry, ResultType
from ..rq.keys import RQKeys
from ..rq.serializers import Format
from ._admin import QueueAdmin
from ._functions import func_name
from ._limits import Limit, LimitUsage, check_policies, limits_field, limits_usage
from ._models import Callback, JobRecord, JobStatus, RateLimit, Repeat, Retry, WorkerInfo, from_rq_status

log = logging.getLogger("asyncsched.queue")

__all__ = ["TaskQueue"]

_JOB_ID = re.compile(r"\A[A-Za-z0-9_-]+\Z")
_BATCH = 1000  # jobs per coalesced enqueue script call
_WAIT_MS = 2000  # how long an enqueue waits for its replicas (wait_replicas)
_PENDING = frozenset({b"queued", b"started", b"scheduled", b"deferred", b"created", b"rate_limited"})
_ENQUEUE_KEYS = frozenset(
    [
        "func",
        "agent_name",
        "task_name",
        "function_path",
        "args",
        "kwargs",
        "queue",
        "job_id",
        "timeout",
        "result_ttl",
        "ttl",
        "failure_ttl",
        "retry",
        "at",
        "delay",
        "meta",
        "description",
        "scheduled_task_id",
        "unique",
        "at_front",
        "depends_on",
        "allow_dependency_failures",
        "on_success",
        "on_failure",
        "on_stopped",
        "repeat",
        "rate_limit",
        "concurrency_key",
        "max_concurrency",
    ]
)


_Part = tuple[tuple[str, ...], list[Any]]  # a prepared job: the header it shares with like jobs, its values
_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def _backend_errors(method: _F) -> _F:
    """Turn redis-py's connection errors into :class:`BackendUnavailable` and its other error replies
    (``WRONGTYPE``...) into :class:`RedisRefused` (the tree's own errors)."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise BackendUnavailable(f"Redis is unavailable: {exc}") from exc
        except ResponseError as exc:
            raise RedisRefused(f"Redis refused the operation: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def _refused(result: Any) -> RedisRefused | None:
    """The error of one job refused by the enqueue script (its text in place of 1/0), or ``None``."""
    if isinstance(result, bytes | str):
        text = result.decode(errors="replace") if isinstance(result, bytes) else result
        return RedisRefused(f"Redis refused the enqueue: {text}")
    return None


def _is_fake(redis: aioredis.Redis) -> bool:
    return type(redis).__module__.startswith("fakeredis")


class TaskQueue(QueueAdmin):
    """Enqueue jobs and inspect them. An async context manager; usable without entering it too.

    ``redis`` is a URL or a client (default: ``settings.redis_url``). ``name`` is the default queue;
    ``serializer`` (``json`` or ``pickle``, default ``settings.serializer``) is used for jobs we create.
    Reading pickled payloads (args of RQ's jobs, their results) needs ``settings.accept_pickle`` or a
    queue built with ``serializer="pickle"``; otherwise they are never unpickled.
    """

    def __init__(
        self,
        redis: str | aioredis.Redis | None = None,
        *,
        settings: Settings | None = None,
        name: str = "default",
        serializer: str | None = None,
        wait_replicas: int | None = None,
        limits: Mapping[str, Limit] | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        _tracing.configure(self.settings)
        # flow-limit policies of queues and functions ("queue:<name>" / "function:<path>" -> Limit)
        self.limits = check_policies(limits)
        url = (redis or self.settings.redis_url) if redis is None or isinstance(redis, str) else ""
        # acknowledge an enqueue only once this many replicas have it (WAIT; opt-in: see
        # docs/fault-tolerance.md, Redis Sentinel failover)
        self.wait_replicas = wait_replicas or 0
        if redis is None or isinstance(redis, str):
            self.redis = create_redis(url)
            self._owns = True
        else:
            self.redis = redis
            self._owns = False
        self.name = name
        self.serializer = Format(serializer or self.settings.serializer)
        self.accept_pickle = self.settings.accept_pickle or self.serializer == Format.PICKLE
        self.keys = RQKeys(self.settings.key_prefix)
        self.prefix = self.settings.key_prefix
        self.stream = lifecycle_stream(self.prefix)
        self._scripts = Scripts(self.redis)
        # the flusher's own connection; only with a client of our own (closed by aclose(), as that client is:
        # a queue wrapping the caller's client may be dropped without aclose())
        self._line = Line(self.redis) if self._owns and Line.supported(self.redis) else None
        self._r: Any = self.redis  # redis-py's stubs type replies as bytes | str; ours are bytes
        self._pending: list[tuple[_Part, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._ts_for: datetime | None = None
        self._ts = ""
        self._epoch = ""
        self._headers: dict[tuple[Any, ...], tuple[str, ...]] = {}  # shared options -> script header

    async def __aenter__(self) -> TaskQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Finish pending writes, then close the client if this queue created it."""
        flusher = self._flusher
        if flusher is not None and not flusher.done() and flusher.get_loop() is asyncio.get_running_loop():
            await asyncio.gather(flusher, return_exceptions=True)
        if self._line is not None:
            await self._line.aclose()
        if self._owns:
            await self.redis.aclose()

    # ------------------------------------------------------------------ enqueue
    @async_api("TaskQueue")
    @_backend_errors
    async def enqueue(
        self,
        func: Callable[..., Any] | str | None = None,
        *,
        agent_name: str | None = None,
        task_name: str | None = None,
        function_path: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        job_id: str | None = None,
        timeout: int | float | timedelta | None = None,  # noqa: ASYNC109 (the job's, RQ's name)
        result_ttl: int | None = None,
        ttl: int | None = None,
        failure_ttl: int | None = None,
        retry: Retry | int | None = None,
        at: datetime | None = None,
        delay: float | timedelta | None = None,
        meta: Mapping[str, Any] | None = None,
        description: str | None = None,
        scheduled_task_id: str | None = None,
        unique: bool = False,
        at_front: bool = False,
        depends_on: str | Iterable[str] | None = None,
        allow_dependency_failures: bool = False,
        on_success: Callback | Callable[..., Any] | str | None = None,
        on_failure: Callback | Callable[..., Any] | str | None = None,
        on_stopped: Callback | Callable[..., Any] | str | None = None,
        repeat: Repeat | None = None,
        rate_limit: RateLimit | str | None = None,
        concurrency_key: str | None = None,
        max_concurrency: int | None = None,
    ) -> str:
        """Enqueue one job; returns its id. Nothing is written when an argument cannot be serialized.

        ``func`` is a module-level callable or a ``"package.module:function"`` path (``function_path``
        alone works too and is recorded either way). ``at``/``delay`` schedule the job (workers promote it
        when due). ``unique=True`` writes nothing if ``job_id`` already exists and returns ``job_id``.

        RQ's job features, written as RQ writes them (a stock ``rq worker`` honours them too):
        ``depends_on`` (job ids; the job waits, ``deferred``, until they all finished, or also failed with
        ``allow_dependency_failures``), ``on_success``/``on_failure``/``on_stopped`` callbacks
        (:class:`Callback`, or a function / path with RQ's 60 s timeout), ``repeat`` (:class:`Repeat`)
        and ``rate_limit`` (:class:`RateLimit`, RQ 3's). ``depends_on`` and ``rate_limit`` cannot be
        combined with ``at``/``delay``.

        Flow limits (docs/flow-control.md), enforced by the workers when they take the job:
        ``rate_limit="60/m"`` or ``"openai:60/m"`` (starts per period, per key: the function's own by
        default), ``max_concurrency=5`` (running at once) with an optional ``concurrency_key`` template of
        the job's keyword arguments (``"tenant:{tenant_id}"``); the queue's ``limits`` policies add theirs.
        """
        job_id, part = self._prepare(
            now=datetime.now(UTC),
            func=func,
            agent_name=agent_name,
            task_name=task_name,
            function_path=function_path,
            args=args,
            kwargs=kwargs,
            queue=queue,
            job_id=job_id,
            timeout=timeout,
            result_ttl=result_ttl,
            ttl=ttl,
            failure_ttl=failure_ttl,
            retry=retry,
            at=at,
            delay=delay,
            meta=meta,
            description=description,
            scheduled_task_id=scheduled_task_id,
            unique=unique,
            at_front=at_front,
            depends_on=depends_on,
            allow_dependency_failures=allow_dependency_failures,
            on_success=on_success,
            on_failure=on_failure,
            on_stopped=on_stopped,
            repeat=repeat,
            rate_limit=rate_limit,
            concurrency_key=concurrency_key,
            max_concurrency=max_concurrency,
        )
        await self._submit(part)
        return job_id

    async def _submit(self, part: _Part) -> None:
        """Write one prepared job. Concurrent calls are coalesced: every job submitted while a write is
        being prepared goes into the same script call (one round trip for many producers), and each
        caller still waits for its own job to be written (or gets the error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((part, future))
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        # Runs from the loop iteration after the first submit: every producer of that iteration has joined
        loop = asyncio.get_running_loop()
        # jobs submitted on another (since closed) loop have no caller left to tell
        self._pending = [(part, fut) for part, fut in self._pending if fut.get_loop() is loop]
        while self._pending:
            batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
            args = self._enqueue_args([part for part, _ in batch])
            try:
                if self._line is not None:
                    results = await self._scripts.run_on(self._line, "enqueue", args)
                    if self.wait_replicas:
                        await self._replicated(self._line)
                else:
                    results = await self._scripts.run("enqueue", args)
            except BaseException as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for (_, fut), result in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    refused = _refused(result)  # this job's queue key has the wrong type: it alone fails
                    if refused is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(refused)

    async def _replicated(self, line: Line) -> None:
        """``WAIT`` on the connection that wrote: ``wait_replicas`` replicas have the writes, or the
        enqueue is not acknowledged (``BackendUnavailable``; the jobs may still run)."""
        (acked,) = await line.execute(("WAIT", self.wait_replicas, _WAIT_MS))
        if isinstance(acked, Exception):
            raise acked
        if int(acked) < self.wait_replicas:
            raise BackendUnavailable(
                f"the enqueue reached {acked} of {self.wait_replicas} replicas within {_WAIT_MS} ms; "
                "not acknowledged (the job may still run)"
            )

    @_backend_errors
    async def enqueue_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[str]:
        """Enqueue several jobs (same keys as :meth:`enqueue`) in one round trip.

        Every job is validated and serialized first, so a bad one raises before anything is written.
        Up to 1,000 jobs are written by one atomic script call; larger batches are split into calls of
        1,000, sent in order in the same round trip, so Redis is never blocked by one huge script.
        """
        parts: list[_Part] = []
        ids: list[str] = []
        now = datetime.now(UTC)
        for spec in jobs:
            unknown = set(spec) - _ENQUEUE_KEYS
            if unknown:
                raise TypeError(f"enqueue_many: unknown keys {sorted(unknown)}")
            job_id, part = self._prepare(now=now, **spec)
            ids.append(job_id)
            parts.append(part)
        if not parts:
            return []
        calls = [self._enqueue_args(parts[i : i + _BATCH]) for i in range(0, len(parts), _BATCH)]
        if len(calls) == 1:
            results = [await self._scripts.run("enqueue", calls[0])]
        else:
            results = await self._scripts.run_many("enqueue", calls)
        refused = [
            (i, r) for i, r in zip(ids, (x for call in results for x in call), strict=True) if _refused(r)
        ]
        if refused:
            raise RedisRefused(
                f"{len(refused)} of {len(ids)} jobs were not enqueued (the others were): "
                f"{_refused(refused[0][1])} (first: job {refused[0][0]})"
            )
        return ids

    def _enqueue_args(self, parts: list[_Part]) -> list[Any]:
        """The enqueue script's arguments: runs of jobs with the same header become one segment."""
        out: list[Any] = [self.prefix, self.stream, self.settings.lifecycle_maxlen]
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

    def _prepare(
        self,
        *,
        now: datetime,
        func: Callable[..., Any] | str | None = None,
        agent_name: str | None = None,
        task_name: str | None = None,
        function_path: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        job_id: str | None = None,
        timeout: int | float | timedelta | None = None,
        result_ttl: int | None = None,
        ttl: int | None = None,
        failure_ttl: int | None = None,
        retry: Retry | int | None = None,
        at: datetime | None = None,
        delay: float | timedelta | None = None,
        meta: Mapping[str, Any] | None = None,
        description: str | None = None,
        scheduled_task_id: str | None = None,
        unique: bool = False,
        at_front: bool = False,
        depends_on: str | Iterable[str] | None = None,
        allow_dependency_failures: bool = False,
        on_success: Callback | Callable[..., Any] | str | None = None,
        on_failure: Callback | Callable[..., Any] | str | None = None,
        on_stopped: Callback | Callable[..., Any] | str | None = None,
        repeat: Repeat | None = None,
        rate_limit: RateLimit | str | None = None,
        concurrency_key: str | None = None,
        max_concurrency: int | None = None,
    ) -> tuple[str, _Part]:
        target = func if func is not None else function_path
        if target is None:
            raise InvalidJob("enqueue needs a function (func=...) or a function_path")
        name = func_name(target)
        path = function_path or (target if isinstance(target, str) else name)
        args = tuple(args)
        kwargs = dict(kwargs or {})
        if unique and job_id is None:
            raise InvalidJob("unique=True needs a job_id")
        fresh = job_id is None
        if job_id is None:
            job_id = _uuid4()
        elif not _JOB_ID.match(job_id):
            raise InvalidJob(f"job id {job_id!r} may only contain letters, digits, '_' and '-' (RQ's rule)")
        qname = queue or self.name
        raw = serializers.dumps((name, None, args, kwargs), self.serializer)  # raises before any write
        check_job_args(
            args, kwargs, raw, self.settings.max_args_bytes, json_ascii=self.serializer == Format.JSON
        )
        data = codec.deflate(raw)  # codec.encode_data, with the boundary check between its two steps
        if self._ts_for is not now:  # one timestamp text per batch
            self._ts_for, self._ts, self._epoch = now, codec.fmt_ts(now), repr(now.timestamp())
        when: datetime | None = None
        if at is not None:
            when = at if at.tzinfo else at.replace(tzinfo=UTC)
        elif delay is not None:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
            when = now + timedelta(seconds=seconds)
        scheduled = when is not None and when > now
        rq_limit = rate_limit if not isinstance(rate_limit, str) else None
        rq_opts = _rq_options(
            depends_on, allow_dependency_failures, on_success, on_failure, on_stopped, repeat, rq_limit
        )
        flow = limits_field(
            path=path,
            queue=qname,
            kwargs=kwargs,
            rate_limit=rate_limit if isinstance(rate_limit, str) else None,
            concurrency_key=concurrency_key,
            max_concurrency=max_concurrency,
            policies=self.limits,
        )
        if flow is not None:
            rq_opts = (*rq_opts, ("asyncsched_limits", flow))
        if scheduled and (depends_on is not None or rq_limit is not None):
            raise InvalidJob("depends_on and rate_limit cannot be combined with at/delay")
        description = description or codec.call_string(name, args, kwargs)
        if _tracing.tracer is not None:  # off: this one check (asyncsched/_tracing.py)
            meta = _tracing.enqueue_meta(meta, name, qname, job_id)
        meta_raw = serializers.dumps(dict(meta), self.serializer) if meta else b""
        shared = (
            qname,
            scheduled,
            "1" if unique else ("n" if fresh else "0"),
            at_front,
            bool(meta_raw),
            path,
            _seconds(timeout) if timeout is not None else self.settings.job_timeout,
            result_ttl,
            failure_ttl,
            ttl,
            retry if isinstance(retry, int | None) else retry.key(),
            agent_name,
            task_name,
            scheduled_task_id,
            rq_opts,
        )
        header = self._headers.get(shared)
        if header is None:
            header = self._header(*shared)
            if len(self._headers) >= 256:
                self._headers.clear()
            self._headers[shared] = header
        values: list[Any] = [job_id, data, meta_raw] if meta_raw else [job_id, data]
        values += (description, self._ts, self._epoch)
        if scheduled:
            assert when is not None
            values.append(str(_run_at_ms(when)))
        return job_id, (header, values)

    @staticmethod
    def _header(
        qname: str,
        scheduled: bool,
        mode: str,
        at_front: bool,
        has_meta: bool,
        path: str,
        timeout: int,
        result_ttl: int | None,
        failure_ttl: int | None,
        ttl: int | None,
        retry: int | tuple[Any, ...] | None,
        agent_name: str | None,
        task_name: str | None,
        scheduled_task_id: str | None,
        rq_opts: tuple[tuple[str, str], ...] = (),
    ) -> tuple[str, ...]:
        """The part of the enqueue script's arguments that jobs with the same options share (see
        ``enqueue.lua``); per-job values (id, data, meta, description, timestamps) go separately."""
        status = "scheduled" if scheduled else "queued"
        # Hash fields in RQ's order (see rq.job.Job.to_dict) after the per-job ones, as a flat list of text.
        names = dict(rq_opts)
        fields = [
            "success_callback_name", names.pop("success_callback_name", ""),
            "failure_callback_name", names.pop("failure_callback_name", ""),
            "stopped_callback_name", names.pop("stopped_callback_name", ""),
            "started_at", "",
            "ended_at", "",
            "last_heartbeat", "",
            "worker_name", "",
            "group_id", "",
            "origin", qname,
            "timeout", str(timeout),
            "status", status,
            "asyncsched_function_path", path,
            "asyncsched_attempt", "1",
        ]  # fmt: skip
        if result_ttl is not None:
            fields += ("result_ttl", str(int(result_ttl)))
        if failure_ttl is not None:
            fields += ("failure_ttl", str(int(failure_ttl)))
        if ttl is not None:
            fields += ("ttl", str(int(ttl)))
        if retry is not None:
            count, intervals, policy = Retry(retry).key() if isinstance(retry, int) else retry
            fields += ("retries_left", str(count))
            fields += ("retry_intervals", "[" + ", ".join(str(i) for i in intervals) + "]")
            if policy:  # backoff / exception filter: read by our worker (RQ ignores the field)
                fields += ("asyncsched_retry", policy)
        for item in names.items():
            fields += item
        if at_front and ("dependency_ids" in names or "rate_limit_key" in names):
            fields += ("enqueue_at_front", "1")  # for the later push (RQ's field)
        life = ["kind", status, "queue", qname, "attempt", "1", "function", path]
        for hash_field, life_field, value in (
            ("asyncsched_agent", "agent_name", agent_name),
            ("asyncsched_task", "task_name", task_name),
            ("asyncsched_scheduled_task", "scheduled_task_id", scheduled_task_id),
        ):
            if value is not None:
                fields += (hash_field, value)
                life += (life_field, value)
        head = [qname, status, mode, "" if ttl is None else str(int(ttl)), "1" if at_front else "0"]
        head += ("1" if has_meta else "0", str(len(fields) // 2))
        return (*head, *fields, str(len(life) // 2), *life)

    # ------------------------------------------------------------------ reading
    @_backend_errors
    async def limits_usage(self) -> list[LimitUsage]:
        """Every rate limit and concurrency cap in use (flow limits and RQ 3's ``RateLimit``), with how
        many jobs run, started in the current window and wait."""
        return await limits_usage(self._r, self.prefix)

    @async_api("TaskQueue")
    @_backend_errors
    async def status(self, job_id: str) -> JobStatus:
        """The job's state. Raises :class:`JobNotFound`, and :class:`InvalidJob` naming a status that
        neither RQ 2.x/3.x nor asyncsched writes."""
        raw = await self._r.hget(self.keys.job(job_id), "status")
        if raw is None:
            if await self._r.exists(self.keys.job(job_id)):
                return JobStatus.QUEUED  # RQ's "created": a hash without a status yet
            raise JobNotFound(f"no job {job_id!r} (never enqueued, or its TTL expired)")
        try:
            return from_rq_status(raw)
        except InvalidJob as exc:
            raise InvalidJob(f"job {job_id!r}: {exc}") from None

    async def _latest(self, job_id: str) -> ResultEntry | None:
        entries = await self._r.xrevrange(self.keys.results(job_id), count=1)
        if not entries:
            return None
        entry_id, fields = entries[0]
        return ResultEntry.decode(entry_id, fields)

    @async_api("TaskQueue")
    @_backend_errors
    async def result(self, job_id: str, wait: float | None = None) -> Any:
        """The job's return value; ``None`` if it has not finished (after waiting up to ``wait`` seconds)
        or was cancelled.

        Raises :class:`JobError` with the error line when the job failed or was stopped, and
        :class:`JobNotFound` when there is neither a job nor a result. The result of an earlier attempt
        of a job that was re-queued is not returned: the current attempt's is awaited.
        """
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.job(job_id), "status")
            pipe.xrevrange(self.keys.results(job_id), count=1)
            status, entries = await pipe.execute()
        last_id: bytes | None = entries[0][0] if entries else None
        entry = ResultEntry.decode(*entries[0]) if entries else None
        pending = status in _PENDING
        if pending:
            entry = None  # an earlier attempt's outcome
            if wait:
                entry = await self._wait_result(job_id, wait, last_id)
        if entry is None:
            if status is None:
                raise JobNotFound(f"no job {job_id!r} (never enqueued, or its TTL expired)")
            return None
        if entry.type == ResultType.SUCCESSFUL:
            return entry.value(accept_pickle=self.accept_pickle)
        lines = [ln for ln in (entry.exc_string or "").strip().splitlines() if ln.strip()]
        raise JobError(f"job {job_id} failed: {lines[-1] if lines else 'no error text'}")

    async def _wait_result(self, job_id: str, wait: float, after: bytes | None) -> ResultEntry | None:
        """Wait for a result entry newer than ``after`` (XREAD BLOCK; short polls on memory://)."""
        deadline = time.monotonic() + wait
        key = self.keys.results(job_id)
        pause = 0.005
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if _is_fake(self.redis):
                await asyncio.sleep(min(pause, remaining))
                pause = min(pause * 2, 0.1)
            else:
                start = after.decode() if after else "0-0"
                await self._r.xread({key: start}, count=1, block=max(1, int(remaining * 1000)))
            entries = await self._r.xrevrange(key, count=1)
            if entries and entries[0][0] != after:
                return ResultEntry.decode(*entries[0])

    @async_api("TaskQueue")
    @_backend_errors
    async def job(self, job_id: str) -> JobRecord:
        """The full record. Raises :class:`JobNotFound`."""
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.job(job_id))
            pipe.xrevrange(self.keys.results(job_id), count=1)
            raw, entries = await pipe.execute()
        if not raw:
            raise JobNotFound(f"no job {job_id!r} (never enqueued, or its TTL expired)")
        latest = ResultEntry.decode(*entries[0]) if entries else None
        return JobRecord.from_hash(job_id, raw, latest, accept_pickle=self.accept_pickle)

    async def _records(self, ids: list[str]) -> list[JobRecord]:
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.keys.job(job_id))
                pipe.xrevrange(self.keys.results(job_id), count=1)
            replies = await pipe.execute()
        out = []
        for n, job_id in enumerate(ids):
            raw, entries = replies[2 * n], replies[2 * n + 1]
            if raw:
                latest = ResultEntry.decode(*entries[0]) if entries else None
                try:
                    out.append(JobRecord.from_hash(job_id, raw, latest, accept_pickle=self.accept_pickle))
                except InvalidJob as exc:  # one malformed hash must not hide the rest of the listing
                    log.warning("listing skips job %s: %s", job_id, exc)
        return out

    async def _ids(self, queue: str, status: JobStatus) -> list[str]:
        k = self.keys
        if status == JobStatus.QUEUED:
            raw = await self._r.lrange(k.queue(queue), 0, -1)
        elif status == JobStatus.RUNNING:
            raw = [m.split(b":", 1)[0] for m in await self._r.zrange(k.wip(queue), 0, -1)]
        else:
            key = {
                JobStatus.SUCCESS: k.finished(queue),
                JobStatus.FAILED: k.failed(queue),
                JobStatus.CANCELLED: k.canceled(queue),
                JobStatus.SCHEDULED: k.scheduled(queue),
                JobStatus.DEFERRED: k.deferred(queue),
            }[status]
            raw = await self._r.zrange(key, 0, -1)
        return list(dict.fromkeys(r.decode() for r in raw))

    @_backend_errors
    async def list_jobs(
        self,
        queue: str = "default",
        status: JobStatus | None = None,
        offset: int = 0,
        limit: int = 50,
        *,
        agent_name: str | None = None,
        task_name: str | None = None,
    ) -> list[JobRecord]:
        """Jobs of ``queue`` in ``status`` (all states when ``None``: running, queued, scheduled,
        deferred, failed, success, cancelled), optionally only those of ``agent_name``/``task_name``."""
        order = (
            [status]
            if status is not None
            else [
                JobStatus.RUNNING,
                JobStatus.QUEUED,
                JobStatus.SCHEDULED,
                JobStatus.DEFERRED,
                JobStatus.FAILED,
                JobStatus.SUCCESS,
                JobStatus.CANCELLED,
            ]
        )
        ids: list[str] = []
        for st in order:
            ids.extend(await self._ids(queue, st))
        ids = list(dict.fromkeys(ids))
        if agent_name is None and task_name is None:
            return await self._records(ids[offset : offset + limit])
        out: list[JobRecord] = []
        skipped = 0
        for start in range(0, len(ids), 500):
            for rec in await self._records(ids[start : start + 500]):
                if (agent_name is None or rec.agent_name == agent_name) and (
                    task_name is None or rec.task_name == task_name
                ):
                    if skipped < offset:
                        skipped += 1
                    else:
                        out.append(rec)
                        if len(out) >= limit:
                            return out
        return out

    @_backend_errors
    async def queues(self) -> list[str]:
        """Names of every known queue (RQ's ``<p>:queues`` set)."""
        members = await self._r.smembers(self.keys.queues)
        return sorted(self.keys.queue_name(m) for m in members)

    @_backend_errors
    async def queue_counts(self) -> dict[str, dict[str, int]]:
        """Queue name -> ``{state: count}`` (expired registry entries are not counted). A state whose key
        Redis refuses (a key of the wrong type) is left out of its queue's counts, with a warning."""
        names = await self.queues()
        now = int(time.time())
        k = self.keys
        async with self._r.pipeline(transaction=False) as pipe:
            for q in names:
                pipe.llen(k.queue(q))
                pipe.zcount(k.wip(q), now, "+inf")
                pipe.zcount(k.finished(q), now, "+inf")
                pipe.zcount(k.failed(q), now, "+inf")
                pipe.zcard(k.canceled(q))
                pipe.zcard(k.scheduled(q))
                pipe.zcard(k.deferred(q))
            replies = await pipe.execute(raise_on_error=False)
        states = ["queued", "running", "success", "failed", "cancelled", "scheduled", "deferred"]
        out: dict[str, dict[str, int]] = {}
        for n, q in enumerate(names):
            counts = out[q] = {}
            for state, reply in zip(states, replies[7 * n : 7 * n + 7], strict=True):
                if isinstance(reply, Exception):
                    log.warning("queue %s: its %s count is left out: Redis refused it (%s)", q, state, reply)
                else:
                    counts[state] = reply
        return out

    @_backend_errors
    async def workers(self) -> list[WorkerInfo]:
        """Workers registered in RQ's keys (ours and RQ's), as ``rq info`` lists them."""
        keys = sorted(await self._r.smembers(self.keys.workers))
        if not keys:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
                pipe.smembers(key + b":executions")
            replies = await pipe.execute()
        out = []
        for n, key in enumerate(keys):
            raw, executions = replies[2 * n], replies[2 * n + 1]
            if not raw or b"death" in raw:
                continue
            h = {a.decode(): b.decode(errors="replace") for a, b in raw.items()}
            name = key.decode()[len(self.keys.worker("")) :]
            current = sorted({e.decode().split(":", 1)[0] for e in executions})
            if not current and h.get("current_job"):
                current = [h["current_job"]]
            out.append(
                WorkerInfo(
                    name=name,
                    queues=[q for q in h.get("queues", "").split(",") if q],
                    state=h.get("state", "?"),
                    last_heartbeat=codec.parse_ts(h.get("last_heartbeat")),
                    birth=codec.parse_ts(h.get("birth")),
                    current_jobs=current,
                    successful_job_count=int(h.get("successful_job_count") or 0),
                    failed_job_count=int(h.get("failed_job_count") or 0),
                    total_working_time=float(h.get("total_working_time") or 0),
                    hostname=h.get("hostname"),
                    pid=int(h["pid"]) if h.get("pid") else None,
                    version=h.get("version"),
                )
            )
        return out

    # ------------------------------------------------------------------ changing state
    @async_api("TaskQueue")
    @_backend_errors
    async def cancel(self, job_id: str) -> bool:
        """Cancel a job: a queued/scheduled one never runs; a running one is stopped (async jobs are
        cancelled on the worker's loop; a sync job's thread runs on but its result is discarded).
        Returns ``False`` if the job had already ended. Raises :class:`JobNotFound`."""
        rc = await self._scripts.run(
            "cancel",
            [
                self.prefix,
                job_id,
                int(time.time()),
                self.stream,
                self.settings.lifecycle_maxlen,
                codec.fmt_ts(),
            ],
        )
        if rc == -1:
            raise JobNotFound(f"no job {job_id!r} (never enqueued, or its TTL expired)")
        return bool(rc > 0)

    @_backend_errors
    async def suspend_workers(self, duration: int | None = None) -> None:
        """Suspend every worker on this Redis, ours and RQ's (as ``rq suspend``): running jobs finish,
        no job starts until :meth:`resume_workers` (or until ``duration`` seconds have passed)."""
        if duration is not None and duration < 1:
            raise ValueError(f"duration must be at least 1 second, got {duration!r}")
        await self._r.set(self.keys.suspended, 1, ex=duration)

    @_backend_errors
    async def resume_workers(self) -> None:
        """Undo :meth:`suspend_workers` (as ``rq resume``)."""
        await self._r.delete(self.keys.suspended)

    @_backend_errors
    async def workers_suspended(self) -> bool:
        """Whether workers are suspended (by :meth:`suspend_workers`, ``rq suspend`` or the CLI)."""
        return bool(await self._r.exists(self.keys.suspended))

    @_backend_errors
    async def requeue(self, job_id: str) -> None:
        """Put a failed (or stopped/cancelled) job back on its queue as a new attempt."""
        rc = await self._scripts.run(
            "requeue",
            [
                self.prefix,
                job_id,
                int(time.time()),
                codec.fmt_ts(),
                self.stream,
                self.settings.lifecycle_maxlen,
            ],
        )
        if rc == -1:
            raise JobNotFound(f"no job {job_id!r} (never enqueued, or its TTL expired)")
        if rc == 0:
            status = await self.status(job_id)
            raise JobError(f"job {job_id} is {status}, only failed or cancelled jobs can be requeued")

    @_backend_errors
    async def delete(self, job_id: str) -> None:
        """Remove a job's hash and result stream (not its registry entries, which expire)."""
        await self._r.delete(self.keys.job(job_id), self.keys.results(job_id))


def _uuid4() -> str:
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


def _rq_options(
    depends_on: str | Iterable[str] | None,
    allow_failures: bool,
    on_success: Callback | Callable[..., Any] | str | None,
    on_failure: Callback | Callable[..., Any] | str | None,
    on_stopped: Callback | Callable[..., Any] | str | None,
    repeat: Repeat | None,
    rate_limit: RateLimit | None,
) -> tuple[tuple[str, str], ...]:
    """The RQ job hash fields (name, text) of these options, validated; hashable, for the header cache."""
    out: list[tuple[str, str]] = []
    for kind, cb in (("success", on_success), ("failure", on_failure), ("stopped", on_stopped)):
        if cb is None:
            continue
        if not isinstance(cb, Callback):
            cb = Callback(cb)
        out.append((f"{kind}_callback_name", func_name(cb.func)))
        if cb.timeout is not None:
            out.append((f"{kind}_callback_timeout", str(cb.timeout)))
    if repeat is not None:
        if not isinstance(repeat, Repeat):
            raise InvalidJob(f"repeat must be asyncsched.queue.Repeat, got {type(repeat).__name__}")
        out += [("repeats_left", str(repeat.times)), ("repeat_intervals", json.dumps(repeat.intervals))]
    if rate_limit is not None:
        if not isinstance(rate_limit, RateLimit):
            raise InvalidJob(
                f"rate_limit must be asyncsched.queue.RateLimit or a rate text such as '60/m', "
                f"got {type(rate_limit).__name__}"
            )
        out += [("rate_limit_key", rate_limit.key), ("rate_limit_concurrency", str(rate_limit.concurrency))]
    if depends_on is not None:
        ids = [depends_on] if isinstance(depends_on, str) else list(depends_on)
        bad = [i for i in ids if not _JOB_ID.match(str(i))]
        if not ids or bad:
            raise InvalidJob(f"depends_on must be one or more job ids, got {depends_on!r}")
        out += [("dependency_id", ids[0]), ("dependency_ids", json.dumps(ids))]
        out.append(("allow_dependency_failures", "1" if allow_failures else "0"))
    return tuple(out)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _run_at_ms(when: datetime) -> int:
    """Epoch milliseconds of ``when``, rounded up (a job never starts before the time asked for)."""
    micros = (when - _EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1000)
