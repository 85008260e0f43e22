"""``TaskQueue``: enqueue jobs in python-rq's format and read their state, results and workers."""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from .._keys import lifecycle_stream
from .._lifecycle import LIFECYCLE_MAXLEN
from .._redis import create_redis
from ..config import Settings, get_settings
from ..exceptions import InvalidJob, JobError, JobNotFound
from ..rq import codec, serializers
from ..rq._scripts import Scripts
from ..rq.codec import ResultEntry, ResultType
from ..rq.keys import RQKeys
from ..rq.serializers import Format
from ._functions import func_name
from ._models import JobRecord, JobStatus, Retry, WorkerInfo, from_rq_status

__all__ = ["TaskQueue"]

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]+$")
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
    ]
)


def _is_fake(redis: aioredis.Redis) -> bool:
    return type(redis).__module__.startswith("fakeredis")


class TaskQueue:
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
    ) -> None:
        self.settings = settings or get_settings()
        if redis is None or isinstance(redis, str):
            self.redis = create_redis(redis or self.settings.redis_url)
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
        self._r: Any = self.redis  # redis-py's stubs type replies as bytes | str; ours are bytes

    async def __aenter__(self) -> TaskQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client if this queue created it."""
        if self._owns:
            await self.redis.aclose()

    # ------------------------------------------------------------------ enqueue
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
    ) -> str:
        """Enqueue one job; returns its id. Nothing is written when an argument cannot be serialized.

        ``func`` is a module-level callable or a ``"package.module:function"`` path (``function_path``
        alone works too and is recorded either way). ``at``/``delay`` schedule the job (workers promote it
        when due). ``unique=True`` writes nothing if ``job_id`` already exists and returns ``job_id``.
        """
        ids = await self.enqueue_many(
            [
                {
                    "func": func,
                    "agent_name": agent_name,
                    "task_name": task_name,
                    "function_path": function_path,
                    "args": args,
                    "kwargs": kwargs,
                    "queue": queue,
                    "job_id": job_id,
                    "timeout": timeout,
                    "result_ttl": result_ttl,
                    "ttl": ttl,
                    "failure_ttl": failure_ttl,
                    "retry": retry,
                    "at": at,
                    "delay": delay,
                    "meta": meta,
                    "description": description,
                    "scheduled_task_id": scheduled_task_id,
                    "unique": unique,
                    "at_front": at_front,
                }
            ]
        )
        return ids[0]

    async def enqueue_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[str]:
        """Enqueue several jobs (same keys as :meth:`enqueue`) in one atomic round trip."""
        argv: list[Any] = [self.prefix, self.stream, LIFECYCLE_MAXLEN]
        body: list[Any] = []
        ids: list[str] = []
        now = datetime.now(UTC)
        for spec in jobs:
            unknown = set(spec) - _ENQUEUE_KEYS
            if unknown:
                raise TypeError(f"enqueue_many: unknown keys {sorted(unknown)}")
            job_id, part = self._prepare(now=now, **spec)
            ids.append(job_id)
            body.extend(part)
        if not ids:
            return []
        await self._scripts.run("enqueue", [*argv, len(ids), *body])
        return ids

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
    ) -> tuple[str, list[Any]]:
        target = func if func is not None else function_path
        if target is None:
            raise InvalidJob("enqueue needs a function (func=...) or a function_path")
        name = func_name(target)
        path = function_path or (target if isinstance(target, str) else name)
        args = tuple(args)
        kwargs = dict(kwargs or {})
        if unique and job_id is None:
            raise InvalidJob("unique=True needs a job_id")
        if job_id is None:
            job_id = str(uuid.uuid4())
        elif not _JOB_ID.match(job_id):
            raise InvalidJob(f"job id {job_id!r} may only contain letters, digits, '_' and '-' (RQ's rule)")
        qname = queue or self.name
        data = codec.encode_data(name, args, kwargs, self.serializer)  # raises before anything is written
        ts = codec.fmt_ts(now)
        when: datetime | None = None
        if at is not None:
            when = at if at.tzinfo else at.replace(tzinfo=UTC)
        elif delay is not None:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
            when = now + timedelta(seconds=seconds)
        scheduled = when is not None and when > now
        fields: dict[str, Any] = {
            "created_at": ts,
            "data": data,
            "success_callback_name": "",
            "failure_callback_name": "",
            "stopped_callback_name": "",
            "started_at": "",
            "ended_at": "",
            "last_heartbeat": "",
            "worker_name": "",
            "group_id": "",
            "origin": qname,
            "description": description or codec.call_string(name, args, kwargs),
            "timeout": _seconds(timeout) if timeout is not None else self.settings.job_timeout,
            "status": "scheduled" if scheduled else "queued",
            "asyncsched_function_path": path,
            "asyncsched_attempt": 1,
        }
        if not scheduled:
            fields["enqueued_at"] = ts
        for key, value in (("result_ttl", result_ttl), ("failure_ttl", failure_ttl), ("ttl", ttl)):
            if value is not None:
                fields[key] = int(value)
        if meta:
            fields["meta"] = serializers.dumps(dict(meta), self.serializer)
        if retry is not None:
            policy = Retry(retry) if isinstance(retry, int) else retry
            fields["retries_left"] = policy.max
            fields["retry_intervals"] = "[" + ", ".join(str(i) for i in policy.intervals) + "]"
        extra = {
            "asyncsched_agent": agent_name,
            "asyncsched_task": task_name,
            "asyncsched_scheduled_task": scheduled_task_id,
        }
        fields.update({k: v for k, v in extra.items() if v is not None})
        pairs: list[Any] = [x for kv in fields.items() for x in kv]
        life: dict[str, Any] = {
            "kind": "scheduled" if scheduled else "queued",
            "job_id": job_id,
            "queue": qname,
            "attempt": 1,
            "function": path,
            "enqueued_at": now.timestamp(),
        }
        named = {"agent_name": agent_name, "task_name": task_name, "scheduled_task_id": scheduled_task_id}
        life.update({k: v for k, v in named.items() if v is not None})
        life_pairs = [x for kv in life.items() for x in kv]
        score = int(when.timestamp()) if when is not None else 0
        part = [
            job_id,
            qname,
            "scheduled" if scheduled else "queued",
            score,
            "1" if unique else "0",
            "" if ttl is None else int(ttl),
            "1" if at_front else "0",
            len(fields),
            *pairs,
            len(life),
            *life_pairs,
        ]
        return job_id, part

    # ------------------------------------------------------------------ reading
    async def status(self, job_id: str) -> JobStatus:
        """The job's state. Raises :class:`JobNotFound`."""
        raw = await self._r.hget(self.keys.job(job_id), "status")
        if raw is None:
            raise JobNotFound(f"no job {job_id!r} (never enqueued, or its TTL expired)")
        return from_rq_status(raw)

    async def _latest(self, job_id: str) -> ResultEntry | None:
        entries = await self._r.xrevrange(self.keys.results(job_id), count=1)
        if not entries:
            return None
        entry_id, fields = entries[0]
        return ResultEntry.decode(entry_id, fields)

    async def result(self, job_id: str, wait: float | None = None) -> Any:
        """The job's return value; ``None`` if it has not finished (after waiting up to ``wait`` seconds).

        Raises :class:`JobError` with the error line when the job failed or was stopped, and
        :class:`JobNotFound` when there is neither a job nor a result.
        """
        entry = await self._latest(job_id)
        if entry is None and wait:
            entry = await self._wait_result(job_id, wait)
        if entry is None:
            if not await self._r.exists(self.keys.job(job_id)):
                raise JobNotFound(f"no job {job_id!r} (never enqueued, or its TTL expired)")
            return None
        if entry.type == ResultType.SUCCESSFUL:
            return entry.value(accept_pickle=self.accept_pickle)
        lines = [ln for ln in (entry.exc_string or "").strip().splitlines() if ln.strip()]
        raise JobError(f"job {job_id} failed: {lines[-1] if lines else 'no error text'}")

    async def _wait_result(self, job_id: str, wait: float) -> ResultEntry | None:
        deadline = time.monotonic() + wait
        key = self.keys.results(job_id)
        pause = 0.005
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if _is_fake(self.redis):
                await asyncio.sleep(min(pause, remaining))  # the embedded server: short polls
                pause = min(pause * 2, 0.1)
            else:
                await self._r.xread({key: "0-0"}, count=1, block=max(1, int(remaining * 1000)))
            entry = await self._latest(job_id)
            if entry is not None:
                return entry

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
                out.append(JobRecord.from_hash(job_id, raw, latest, accept_pickle=self.accept_pickle))
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

    async def queues(self) -> list[str]:
        """Names of every known queue (RQ's ``<p>:queues`` set)."""
        members = await self._r.smembers(self.keys.queues)
        return sorted(self.keys.queue_name(m) for m in members)

    async def queue_counts(self) -> dict[str, dict[str, int]]:
        """Queue name -> ``{state: count}`` (expired registry entries are not counted)."""
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
            replies = await pipe.execute()
        states = ["queued", "running", "success", "failed", "cancelled", "scheduled", "deferred"]
        return {q: dict(zip(states, replies[7 * n : 7 * n + 7], strict=True)) for n, q in enumerate(names)}

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
    async def cancel(self, job_id: str) -> bool:
        """Cancel a job: a queued/scheduled one never runs; a running one is stopped (async jobs are
        cancelled on the worker's loop; a sync job's thread runs on but its result is discarded).
        Returns ``False`` if the job had already ended. Raises :class:`JobNotFound`."""
        rc = await self._scripts.run(
            "cancel", [self.prefix, job_id, int(time.time()), self.stream, LIFECYCLE_MAXLEN]
        )
        if rc == -1:
            raise JobNotFound(f"no job {job_id!r} (never enqueued, or its TTL expired)")
        return bool(rc > 0)

    async def requeue(self, job_id: str) -> None:
        """Put a failed (or stopped/cancelled) job back on its queue as a new attempt."""
        rc = await self._scripts.run(
            "requeue",
            [self.prefix, job_id, int(time.time()), codec.fmt_ts(), self.stream, LIFECYCLE_MAXLEN],
        )
        if rc == -1:
            raise JobNotFound(f"no job {job_id!r} (never enqueued, or its TTL expired)")
        if rc == 0:
            status = await self.status(job_id)
            raise JobError(f"job {job_id} is {status}, only failed or cancelled jobs can be requeued")

    async def delete(self, job_id: str) -> None:
        """Remove a job's hash and result stream (not its registry entries, which expire)."""
        await self._r.delete(self.keys.job(job_id), self.keys.results(job_id))


def _seconds(value: int | float | timedelta) -> int:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds == -1:
        return -1
    if seconds <= 0:
        raise InvalidJob(f"timeout must be positive seconds (or -1 for none), got {value!r}")
    return math.ceil(seconds)
