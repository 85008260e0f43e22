"""``TaskQueue``: enqueue jobs in python-rq's format and read their state, results and workers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from .. import _tracing
from .._keys import lifecycle_stream
from .._lifetime import Closing
from .._misuse import async_api
from .._redis import create_redis
from .._redis.cluster import is_cluster
from .._redis.connection import Line
from .._redis.scripts import Reply
from ..config import Settings, get_settings
from ..exceptions import BackendUnavailable, ClusterUnsupported, JobError, JobNotFound, RedisRefused
from ..rq import codec
from ..rq._calls import CancelCall, EnqueueCall
from ..rq._scripts import Scripts
from ..rq.keys import RQKeys
from ..rq.serializers import Format
from ._admin import QueueAdmin
from ._cluster import ClusterPreparer, cluster_calls, in_order, refuse_limits, stream_of_job
from ._enqueue import ENQUEUE_OPTIONS, EnqueueOptions, Part, Preparer, segments
from ._errors import backend_errors
from ._limits import Limit, check_policies
from ._models import Callback, RateLimit, Repeat, Retry
from ._reading import QueueReader

log = logging.getLogger("asyncsched.queue")

__all__ = ["TaskQueue"]

_BATCH = 1000  # jobs per coalesced enqueue script call
_WAIT_MS = 2000  # how long an enqueue waits for its replicas (wait_replicas)


def _refused(result: Reply) -> RedisRefused | None:
    """The error of one job refused by the enqueue script (its text in place of 1/0), or ``None``."""
    if isinstance(result, bytes):
        return RedisRefused(f"Redis refused the enqueue: {result.decode(errors='replace')}")
    return None


class TaskQueue(QueueReader, QueueAdmin, Closing):
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
        # on a Redis Cluster (chosen here, once): queue names as hash tags, one script call per queue
        self._cluster = is_cluster(self.redis)
        self.keys = RQKeys(self.settings.key_prefix, cluster=self._cluster)
        self.prefix = self.settings.key_prefix
        self.stream = lifecycle_stream(self.prefix)  # single node; on a cluster each queue has its own
        self._scripts = Scripts(self.redis)
        # the flusher's own connection; only with a client of our own (closed by aclose(), as that client is:
        # a queue wrapping the caller's client may be dropped without aclose())
        self._line = Line(self.redis) if self._owns and Line.supported(self.redis) else None
        self._r: Any = self.redis  # redis-py's stubs type replies as bytes | str; ours are bytes
        self._pending: list[tuple[Part, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._prep = Preparer(self.settings, self.serializer, self.name, self.limits)
        if self._cluster:
            refuse_limits(self.limits)
            if self.wait_replicas:
                raise ClusterUnsupported("wait_replicas: WAIT is not supported on a Redis Cluster")
            self._prep = ClusterPreparer(self.settings, self.serializer, self.name, self.limits)

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
    @backend_errors
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
        # every argument above, as one record: positionally (~2 µs a job less than by keyword or from
        # locals()); tests/queue/test_wire.py checks that each lands in the field of its name
        options = EnqueueOptions(func, agent_name, task_name, function_path, args, kwargs, queue, job_id,
            timeout, result_ttl, ttl, failure_ttl, retry, at, delay, meta, description, scheduled_task_id,
            unique, at_front, depends_on, allow_dependency_failures, on_success, on_failure, on_stopped,
            repeat, rate_limit, concurrency_key, max_concurrency)  # fmt: skip
        job_id, part = self._prep.prepare(datetime.now(UTC), options)
        await self._submit(part)
        return job_id

    async def _submit(self, part: Part) -> None:
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
            parts = [part for part, _ in batch]
            try:
                if self._cluster:
                    results = await self._write_cluster(parts)
                else:
                    results = await self._scripts.call(self._enqueue_args(parts), self._line)
                if self._line is not None and self.wait_replicas:
                    await self._replicated(self._line)
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

    @backend_errors
    async def enqueue_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[str]:
        """Enqueue several jobs (same keys as :meth:`enqueue`) in one round trip.

        Every job is validated and serialized first, so a bad one raises before anything is written.
        Up to 1,000 jobs are written by one atomic script call; larger batches are split into calls of
        1,000, sent in order in the same round trip, so Redis is never blocked by one huge script.
        """
        parts: list[Part] = []
        ids: list[str] = []
        now = datetime.now(UTC)
        for spec in jobs:
            unknown = set(spec) - ENQUEUE_OPTIONS
            if unknown:
                raise TypeError(f"enqueue_many: unknown keys {sorted(unknown)}")
            job_id, part = self._prep.prepare(now, EnqueueOptions(**spec))
            ids.append(job_id)
            parts.append(part)
        if not parts:
            return []
        calls = [self._enqueue_args(parts[i : i + _BATCH]) for i in range(0, len(parts), _BATCH)]
        if self._cluster:
            results = [await self._write_cluster(parts)]
        elif len(calls) == 1:
            results = [await self._scripts.call(calls[0])]
        else:
            results = await self._scripts.call_many(calls)
        refused = [
            (i, r) for i, r in zip(ids, (x for call in results for x in call), strict=True) if _refused(r)
        ]
        if refused:
            raise RedisRefused(
                f"{len(refused)} of {len(ids)} jobs were not enqueued (the others were): "
                f"{_refused(refused[0][1])} (first: job {refused[0][0]})"
            )
        return ids

    async def _write_cluster(self, parts: list[Part]) -> list[Reply]:
        """On a cluster: the enqueue calls of each queue (concurrent: queues live on different nodes; one
        queue's calls one after another, so that its jobs are queued in the order given), and the queues
        added to ``<p>:queues`` (another slot); the replies in the order of ``parts``."""
        by_queue: dict[str, list[tuple[list[int], EnqueueCall]]] = {}
        for indices, call in cluster_calls(self.keys, self.settings.lifecycle_maxlen, parts, _BATCH):
            by_queue.setdefault(self.keys.queue(parts[indices[0]][0][0]), []).append((indices, call))

        async def write(calls: list[tuple[list[int], EnqueueCall]]) -> list[tuple[list[int], Reply]]:
            return [(indices, await self._scripts.call(call)) for indices, call in calls]

        replies = await asyncio.gather(
            self._r.sadd(self.keys.queues, *by_queue), *(write(calls) for calls in by_queue.values())
        )
        return in_order(len(parts), [w for queue in replies[1:] for w in queue])

    def _stream_of(self, job_id: str) -> str:
        """The lifecycle stream a script changing ``job_id`` appends to."""
        return stream_of_job(self.prefix, job_id) if self._cluster else self.stream

    def _enqueue_args(self, parts: list[Part]) -> EnqueueCall:
        """The enqueue script's call for ``parts``."""
        return EnqueueCall(self.keys, self.stream, self.settings.lifecycle_maxlen, segments(parts))

    # ------------------------------------------------------------------ changing state
    @async_api("TaskQueue")
    @backend_errors
    async def cancel(self, job_id: str) -> bool:
        """Cancel a job: a queued/scheduled one never runs; a running one is stopped (async jobs are
        cancelled on the worker's loop; a sync job's thread runs on but its result is discarded).
        Returns ``False`` if the job had already ended. Raises :class:`JobNotFound`."""
        maxlen = self.settings.lifecycle_maxlen
        rc = await self._scripts.call(
            CancelCall(self.keys, self._stream_of(job_id), job_id, int(time.time()), maxlen, codec.fmt_ts())
        )
        if rc == -1:
            raise JobNotFound(f"no job {job_id!r} (never enqueued, or its TTL expired)")
        return bool(rc > 0)

    @backend_errors
    async def suspend_workers(self, duration: int | None = None) -> None:
        """Suspend every worker on this Redis, ours and RQ's (as ``rq suspend``): running jobs finish,
        no job starts until :meth:`resume_workers` (or until ``duration`` seconds have passed)."""
        if duration is not None and duration < 1:
            raise ValueError(f"duration must be at least 1 second, got {duration!r}")
        await self._r.set(self.keys.suspended, 1, ex=duration)

    @backend_errors
    async def resume_workers(self) -> None:
        """Undo :meth:`suspend_workers` (as ``rq resume``)."""
        await self._r.delete(self.keys.suspended)

    @backend_errors
    async def workers_suspended(self) -> bool:
        """Whether workers are suspended (by :meth:`suspend_workers`, ``rq suspend`` or the CLI)."""
        return bool(await self._r.exists(self.keys.suspended))

    @backend_errors
    async def requeue(self, job_id: str) -> None:
        """Put a failed (or stopped/cancelled) job back on its queue as a new attempt."""
        maxlen = self.settings.lifecycle_maxlen
        rc = await self._scripts.call(self._requeue_call(job_id, int(time.time()), codec.fmt_ts(), maxlen))
        if rc == 1 and self._cluster:
            await self._registered(job_id)
        if rc == -1:
            raise JobNotFound(f"no job {job_id!r} (never enqueued, or its TTL expired)")
        if rc == 0:
            status = await self.status(job_id)
            raise JobError(f"job {job_id} is {status}, only failed or cancelled jobs can be requeued")

    @backend_errors
    async def delete(self, job_id: str) -> None:
        """Remove a job's hash and result stream (not its registry entries, which expire)."""
        await self._r.delete(self.keys.job(job_id), self.keys.results(job_id))
