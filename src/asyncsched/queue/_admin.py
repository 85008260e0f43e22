"""Operators' actions on whole queues: pause/resume, requeue or delete the failed jobs, empty a queue.

Mixed into :class:`~asyncsched.queue.TaskQueue`. Pausing is asyncsched's own (RQ has no per-queue pause):
a key per paused queue (:func:`asyncsched._keys.paused_queue`) that our workers' claim script checks, so
a paused queue keeps its jobs and gives none to our workers. RQ's own workers do not know the key.
"""

from __future__ import annotations

import time
from typing import Any

from .._keys import paused_queue, queue_registered
from .._lifecycle import LIFECYCLE_MAXLEN
from .._redis.scripts import as_int
from ..rq import codec
from ..rq._calls import DeleteFailedCall, EmptyCall, RequeueCall
from ..rq._scripts import Scripts
from ..rq.keys import RQKeys
from ..rq.slots import id_tag
from ._cluster import stream_of_job
from ._models import JobStatus

__all__ = ["QueueAdmin"]

_BATCH = 500


class QueueAdmin:
    """Queue-wide operations (a mixin of ``TaskQueue``, which provides the attributes below)."""

    _r: Any
    _scripts: Scripts
    keys: RQKeys
    prefix: str
    stream: str

    async def pause(self, queue: str) -> bool:
        """Pause ``queue``: our workers claim nothing from it until :meth:`resume`. ``False`` if it was
        paused already."""
        key = paused_queue(self.prefix, self.keys.name(queue))
        return bool(await self._r.set(key, str(time.time()), nx=True))

    async def resume(self, queue: str) -> bool:
        """Resume a paused queue; ``False`` if it was not paused."""
        return bool(await self._r.delete(paused_queue(self.prefix, self.keys.name(queue))))

    async def paused(self, queues: list[str] | None = None) -> set[str]:
        """Which of ``queues`` (default: every known queue) are paused."""
        names = list(queues) if queues is not None else await self._queue_names()
        if not names:
            return set()
        keys = [paused_queue(self.prefix, self.keys.name(q)) for q in names]
        # on a cluster the flags live in their queues' slots: read node by node
        flags = await (self._r.mget_nonatomic(keys) if self.keys.cluster else self._r.mget(keys))
        return {q for q, flag in zip(names, flags, strict=True) if flag is not None}

    async def _ids(self, queue: str, status: JobStatus) -> list[str]:
        raise NotImplementedError  # TaskQueue's

    async def count_jobs(self, queue: str, status: JobStatus | None = None) -> int:
        """How many jobs :meth:`TaskQueue.list_jobs` would list in all (expired registry entries included)."""
        states = [status] if status is not None else list(JobStatus)
        ids: set[str] = set()
        for state in states:
            ids.update(await self._ids(queue, state))
        return len(ids)

    async def _queue_names(self) -> list[str]:
        members = await self._r.smembers(self.keys.queues)
        return sorted(self.keys.queue_name(m) for m in members)

    async def failed_ids(self, queue: str) -> list[str]:
        """Ids in ``queue``'s failed registry, oldest first (expired entries included, as RQ lists them)."""
        return [m.decode() for m in await self._r.zrange(self.keys.failed(queue), 0, -1)]

    async def requeue_failed(self, queue: str) -> list[str]:
        """Put every failed job of ``queue`` back on it (as rq's ``FailedJobRegistry.requeue`` does for
        each); returns the ids requeued. Entries whose job expired or changed state are skipped."""
        ids = await self.failed_ids(queue)
        done: list[str] = []
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            now, now_ts = int(time.time()), codec.fmt_ts()
            replies = await self._scripts.call_many(
                [self._requeue_call(i, now, now_ts, LIFECYCLE_MAXLEN) for i in chunk]
            )
            done.extend(i for i, rc in zip(chunk, replies, strict=True) if rc == 1)
        if done and self.keys.cluster:
            await self._registered(done[0])
        return done

    def _requeue_call(self, job_id: str, now: int, now_ts: str, maxlen: int) -> RequeueCall:
        """``requeue.lua``'s call for ``job_id``; on a cluster with its queue's stream and registry."""
        if not self.keys.cluster:
            return RequeueCall(self.keys, self.stream, job_id, now, now_ts, maxlen)
        stream, registry = stream_of_job(self.prefix, job_id), queue_registered(self.prefix, id_tag(job_id))
        return RequeueCall(self.keys, stream, job_id, now, now_ts, maxlen, registry)

    async def _registered(self, job_id: str) -> None:
        """On a cluster: the queue of ``job_id`` added to ``<p>:queues`` (the scripts cannot reach it)."""
        await self._r.sadd(self.keys.queues, self.keys.queue(id_tag(job_id)))

    async def delete_failed(self, queue: str) -> int:
        """Delete every failed job of ``queue`` (hash, results, registry entry); returns how many."""
        deleted = 0
        while True:
            taken, removed = await self._scripts.call(DeleteFailedCall(self.keys, queue, _BATCH))
            deleted += as_int(removed)
            if as_int(taken) == 0:
                return deleted

    async def empty(self, queue: str) -> int:
        """Remove every queued job of ``queue`` (as rq's ``Queue.empty``); returns how many."""
        removed = 0
        while n := await self._scripts.call(EmptyCall(self.keys, queue, _BATCH)):
            removed += n
        return removed
