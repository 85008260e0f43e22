"""Jobs an `arq <https://arq-docs.helpmanual.io>`_ producer enqueued, run by our worker (``asyncsched[arq]``).

arq's own keys (arq 0.26+): the queue sorted set (``arq:queue``: job id -> run-at in ms), the job
(``arq:job:<id>``: a serialized ``{f, a, k, t, et}``), ``arq:in-progress:<id>`` while a worker runs it,
``arq:retry:<id>`` (the try counter) and the result (``arq:result:<id>``: ``{t, f, a, k, et, s, r, st,
ft, q, id}``, kept ``keep_result`` seconds), so ``await job.result()`` on the arq side works.

Functions are arq's: ``async def name(ctx, *args, **kwargs)``, found by their arq name in ``functions``
(a mapping, a list of callables / ``arq.worker.func(...)`` objects, or ``"module:WorkerSettings"`` whose
``functions`` is read). ``ctx`` has ``job_id``, ``job_try``, ``enqueue_time``, ``score`` and ``redis``.
The worker's hooks (``_hooks.py``) run around arq jobs too: ``before_job`` / ``after_job`` get a
:class:`~asyncsched.worker.CurrentJob` (``queue`` is arq's queue key, ``attempt`` arq's ``job_try``,
``resources`` what ``on_startup`` set up); a ``before_job`` that raises fails the job without running it.

arq serializes with pickle by default: such jobs run only when the worker accepts pickle; otherwise the
job ends with a failed result saying why (the result is written with ``pickle.dumps``, which is safe;
nothing is unpickled). ``serializer="json"`` reads and writes JSON instead (an arq producer configured
with ``job_serializer=lambda d: json.dumps(d).encode()``, ``job_deserializer=json.loads``).
Not supported: arq's abort (``arq:abort``), ``Retry`` exceptions other than a plain re-run, cron jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import pickle
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._redis.scripts import ScriptRegistry, as_bytes, as_int, as_list
from ..exceptions import ConfigurationError, InvalidJob
from ..queue._functions import import_function
from ._hooks import Hooks, call_hook
from ._rqjob import CurrentJob, JobOutcome, set_current

__all__ = ["ArqConsumer", "arq_functions"]

log = logging.getLogger("asyncsched.worker")

QUEUE = "arq:queue"
JOB, IN_PROGRESS, RESULT, RETRY = "arq:job:", "arq:in-progress:", "arq:result:", "arq:retry:"
PICKLE_PROTO = 0x80

# Take one due job as arq's worker does (its WATCH/MULTI, in one script): not running elsewhere, still
# due; mark it in progress, count the try. Returns {job bytes or false, try} or false.
# KEYS: the queue, arq:in-progress:<id>, arq:retry:<id>, arq:job:<id>; ARGV: id, now (ms), in-progress ms
_START = """
local id, now, in_progress_ms = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local score = redis.call('ZSCORE', KEYS[1], id)
if not score or tonumber(score) > now then return false end
redis.call('PSETEX', KEYS[2], in_progress_ms, '1')
local try = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], 88400000)
local job = redis.call('GET', KEYS[4])
return {job or false, try, score}
"""


def arq_functions(
    spec: Mapping[str, Callable[..., Any]] | Iterable[Any] | str,
) -> dict[str, Callable[..., Any]]:
    """arq function names -> coroutine functions, from a mapping, a list of functions or
    ``arq.worker.Function`` objects, or ``"module:WorkerSettings"`` / arq's dotted ``"module.WorkerSettings"``
    (its ``functions``; the class resolved by the function-reference rule: defined in that module)."""
    if isinstance(spec, str):  # resolved by the one function-reference rule (queue/_functions.py)
        try:
            settings: Any = import_function(spec)
            spec = settings.functions
        except (InvalidJob, AttributeError) as exc:
            raise ConfigurationError(f"cannot read arq functions from {spec!r}: {exc}") from None
    if isinstance(spec, Mapping):
        return dict(spec)
    out: dict[str, Callable[..., Any]] = {}
    for item in spec:
        name = getattr(item, "name", None) if hasattr(item, "coroutine") else getattr(item, "__name__", None)
        func = getattr(item, "coroutine", item)
        if not name or not callable(func):
            raise ConfigurationError(f"not an arq function: {item!r}")
        out[name] = func
    return out


class ArqConsumer:
    """Polls arq's queue and runs its due jobs, up to ``concurrency`` at once."""

    def __init__(
        self,
        redis: aioredis.Redis,
        functions: dict[str, Callable[..., Any]],
        *,
        accept_pickle: bool,
        serializer: str = "pickle",
        queue: str = QUEUE,
        concurrency: int = 10,
        job_timeout: float = 300.0,
        keep_result: float = 3600.0,
        max_tries: int = 5,
        poll: float = 0.5,
        hooks: Hooks | None = None,
        resources: dict[str, Any] | None = None,
        executor: Executor | None = None,
        worker_name: str = "",
    ) -> None:
        if serializer not in ("pickle", "json"):
            raise ConfigurationError(f"arq serializer must be 'pickle' or 'json', got {serializer!r}")
        self.redis = redis
        self.functions = functions
        self.accept_pickle = accept_pickle
        self.serializer = serializer
        self.queue = queue
        self.job_timeout = job_timeout
        self.keep_result = keep_result
        self.max_tries = max_tries
        self.poll = poll
        self._slots = asyncio.Semaphore(concurrency)
        self._scripts = ScriptRegistry(redis, {"start": _START})
        self._tasks: set[asyncio.Task[None]] = set()
        self.processed = 0
        # the worker's before_job / after_job hooks (def hooks run in ``executor``, the job threads)
        self.hooks = hooks if hooks is not None and hooks.around_jobs else None
        self.resources = {} if resources is None else resources
        self.executor = executor
        self.worker_name = worker_name

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Run due jobs until ``stop`` is set (or, in burst mode, until none is due and none runs)."""
        while not stop.is_set():
            now = int(time.time() * 1000)
            free = self._slots._value
            started = 0
            try:
                ids: list[Any] = await self.redis.zrangebyscore(
                    self.queue, "-inf", now, start=0, num=max(free, 1)
                )
                for raw in ids:
                    started += await self._take(raw.decode(), now)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("arq consumer: Redis unavailable (%s); retrying", exc)
            if not started:
                if burst and not self._tasks:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll):
                        await stop.wait()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _take(self, job_id: str, now: int) -> int:
        await self._slots.acquire()
        in_progress_ms = int((self.job_timeout + 10) * 1000)
        try:
            keys = [self.queue, IN_PROGRESS + job_id, RETRY + job_id, JOB + job_id]
            reply = await self._scripts.run("start", [job_id, now, in_progress_ms], keys)
        except BaseException:
            self._slots.release()
            raise
        if not reply:
            self._slots.release()
            return 0
        raw, job_try, score = as_list(reply)
        job = None if raw is None else as_bytes(raw)
        run = self._run(job_id, job, as_int(job_try), int(float(as_bytes(score))))
        task = asyncio.get_running_loop().create_task(run)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return 1

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        self.processed += 1

    def _loads(self, raw: bytes) -> Any:
        if raw[:1] == bytes([PICKLE_PROTO]):
            if not self.accept_pickle:
                raise PermissionError("arq job payload is pickled and this worker does not accept pickle")
            return pickle.loads(raw)
        if self.serializer != "json":
            raise ValueError("arq job payload is not a pickle; start the worker with arq serializer 'json'")
        return json.loads(raw)

    def _dumps(self, data: dict[str, Any]) -> bytes:
        if self.serializer == "json":
            try:
                return json.dumps(data).encode()
            except (TypeError, ValueError):
                return json.dumps({**data, "s": False, "r": "unable to serialize result"}).encode()
        try:
            return pickle.dumps(data)
        except Exception:
            return pickle.dumps({**data, "s": False, "r": "unable to serialize result"})

    async def _run(self, job_id: str, raw: bytes | None, job_try: int, score: int) -> None:
        start = int(time.time() * 1000)
        meta: dict[str, Any] = {"t": job_try, "f": "?", "a": (), "k": {}, "et": score}
        current = self._current(job_id, job_try) if self.hooks is not None else None
        try:
            if raw is None:
                raise LookupError(f"arq job {job_id} has no payload (expired?)")
            data = self._loads(raw)
            meta.update(f=data["f"], a=tuple(data["a"]), k=dict(data["k"]), et=data["et"])
            func = self.functions.get(data["f"])
            if func is None:
                raise LookupError(f"arq function {data['f']!r} is not known to this worker")
            if job_try > self.max_tries:
                raise RuntimeError(f"max {self.max_tries} retries exceeded")
            ctx = self._ctx(job_id, job_try, data["et"], score)
            if current is not None:
                await self._hook("before_job", current)
            async with asyncio.timeout(self.job_timeout):
                value = func(ctx, *meta["a"], **meta["k"])
                if inspect.isawaitable(value):
                    value = await value
            success: bool = True
        except Exception as exc:
            log.warning("arq job %s (%s) failed: %r", job_id, meta["f"], exc)
            value, success = exc, False
        if current is not None:
            if success:
                current.outcome, current.result = JobOutcome.FINISHED, value
            else:
                current.outcome, current.error = JobOutcome.FAILED, value
            with contextlib.suppress(Exception):  # logged by _hook; the outcome stands
                await self._hook("after_job", current)
        result = {**meta, "s": success, "r": value, "st": start, "ft": int(time.time() * 1000)}
        result.update(q=self.queue, id=job_id)
        if not success and self.serializer == "json":
            result["r"] = f"{type(value).__name__}: {value}"
        payload = self._dumps(result)
        async with self.redis.pipeline(transaction=True) as tr:
            px = int(self.keep_result * 1000) if self.keep_result > 0 else None
            _ = tr.set(RESULT + job_id, payload, px=px)  # queued; run by execute()
            _ = tr.delete(RETRY + job_id, IN_PROGRESS + job_id, JOB + job_id)
            _ = tr.zrem("arq:abort", job_id)
            _ = tr.zrem(self.queue, job_id)
            await tr.execute()

    def _current(self, job_id: str, job_try: int) -> CurrentJob:
        """What the worker's hooks (and ``current_job()``) see of an arq job."""
        job = CurrentJob(job_id, self.queue, job_id, job_try, self.worker_name, {}, resources=self.resources)
        set_current(job)
        return job

    async def _hook(self, name: str, job: CurrentJob) -> None:
        """Run the ``before_job`` / ``after_job`` hook; its error is logged and raised."""
        hook = getattr(self.hooks, name)
        if hook is None:
            return
        try:
            await call_hook(hook, self.executor, job)
        except Exception:
            log.exception("arq job %s: %s hook failed", job.id, name)
            raise

    def _ctx(self, job_id: str, job_try: int, enqueue_ms: int, score: int) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": datetime.fromtimestamp(enqueue_ms / 1000, UTC),
            "score": score,
            "redis": self.redis,
        }
        with contextlib.suppress(ImportError):
            from arq.connections import ArqRedis

            ctx["redis"] = ArqRedis(connection_pool=self.redis.connection_pool)
        return ctx
