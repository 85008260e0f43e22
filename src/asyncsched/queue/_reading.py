"""Reading a queue's jobs, results, counts and workers (a mixin of :class:`~asyncsched.queue.TaskQueue`)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis

from .._misuse import async_api
from ..exceptions import InvalidJob, JobError, JobNotFound
from ..rq import codec
from ..rq.codec import ResultEntry, ResultType
from ..rq.jobhash import JobField, RQStatus
from ..rq.keys import RQKeys
from ._cluster import fold_aliases
from ._errors import backend_errors
from ._limits import LimitUsage, limits_usage
from ._models import JobRecord, JobStatus, WorkerInfo, from_rq_status

log = logging.getLogger("asyncsched.queue")

__all__ = ["QueueReader"]

_ENDED = (RQStatus.FINISHED, RQStatus.FAILED, RQStatus.STOPPED, RQStatus.CANCELED)
_PENDING = frozenset(s.value.encode() for s in RQStatus if s not in _ENDED)  # no result yet, one may come


def _is_fake(redis: aioredis.Redis) -> bool:
    return type(redis).__module__.startswith("fakeredis")


class QueueReader:
    """What a queue reads (a mixin of ``TaskQueue``, which provides the attributes below)."""

    _r: Any
    redis: aioredis.Redis
    keys: RQKeys
    prefix: str
    accept_pickle: bool

    @backend_errors
    async def limits_usage(self) -> list[LimitUsage]:
        """Every rate limit and concurrency cap in use (flow limits and RQ 3's ``RateLimit``), with how
        many jobs run, started in the current window and wait."""
        return await limits_usage(self._r, self.prefix)

    @async_api("TaskQueue")
    @backend_errors
    async def status(self, job_id: str) -> JobStatus:
        """The job's state. Raises :class:`JobNotFound`, and :class:`InvalidJob` naming a status that
        neither RQ 2.x/3.x nor asyncsched writes."""
        raw = await self._r.hget(self.keys.job(job_id), JobField.STATUS)
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
    @backend_errors
    async def result(self, job_id: str, wait: float | None = None) -> Any:
        """The job's return value; ``None`` if it has not finished (after waiting up to ``wait`` seconds)
        or was cancelled.

        Raises :class:`JobError` with the error line when the job failed or was stopped, and
        :class:`JobNotFound` when there is neither a job nor a result. The result of an earlier attempt
        of a job that was re-queued is not returned: the current attempt's is awaited.
        """
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.job(job_id), JobField.STATUS)
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
    @backend_errors
    async def job(self, job_id: str) -> JobRecord:
        """The full record. Raises :class:`JobNotFound`."""
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.job(job_id))
            pipe.xrevrange(self.keys.results(job_id), count=1)
            raw, entries = await pipe.execute()
        if not raw:
            raise JobNotFound(f"no job {job_id!r} (never enqueued, or its TTL expired)")
        latest = ResultEntry.decode(*entries[0]) if entries else None
        return self._record(job_id, raw, latest)

    def _record(self, job_id: str, raw: Any, latest: ResultEntry | None) -> JobRecord:
        return JobRecord.from_hash(
            job_id, raw, latest, accept_pickle=self.accept_pickle, cluster=self.keys.cluster
        )

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
                    out.append(self._record(job_id, raw, latest))
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

    @backend_errors
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

    @backend_errors
    async def queues(self) -> list[str]:
        """Names of every known queue (RQ's ``<p>:queues`` set)."""
        members = await self._r.smembers(self.keys.queues)
        return sorted(self.keys.queue_name(m) for m in members)

    @backend_errors
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

    @backend_errors
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
        rows: list[tuple[str, dict[str, str], list[str]]] = []
        for n, key in enumerate(keys):
            raw, executions = replies[2 * n], replies[2 * n + 1]
            if not raw or b"death" in raw:
                continue
            h = {a.decode(): b.decode(errors="replace") for a, b in raw.items()}
            name = key.decode()[len(self.keys.worker("")) :]
            current = sorted({e.decode().split(":", 1)[0] for e in executions})
            if not current and h.get("current_job"):
                current = [h["current_job"]]
            rows.append((name, h, current))
        if self.keys.cluster:
            rows = await fold_aliases(self._r, self.keys, rows)
        out = []
        for name, h, current in rows:
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
