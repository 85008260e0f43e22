"""The worker on a Redis Cluster (docs/architecture.md, "Redis Cluster"): every script call touches one
queue's hash slot, so claims, finishes, heartbeats, reaps and promotions go one call per queue.

The worker's queues are their names in Redis (``{q}``: :meth:`RQKeys.name`). In the scripts of a queue the
worker is named ``{q}<name>`` (:func:`~asyncsched.rq.slots.worker_alias`): the keys the scripts derive from
a worker's name (its hash and executions set, its claiming list, its command channel) then share the
queue's slot, which is what ``cancel.lua`` and ``reap.lua`` need when they name them from data. Its
cluster-wide registration (``<p>:worker:<name>`` in ``<p>:workers``, what ``rq info`` and the web API
list) is written outside the scripts: at birth, death and each heartbeat. RQ's suspension key is another
slot: the claimer reads it at most once a second. Flow limits are refused at enqueue on a cluster, so the
limits script never runs here. Chosen once, when the worker is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from .._keys import claiming_list, claiming_registry, lifecycle_stream, paused_queue
from ..rq import codec
from ..rq._calls import ClaimCall, FinishCall, HeartbeatCall, PromoteCall, ReleaseLocksCall
from ..rq.slots import worker_alias
from ._claim import Claimer
from ._finish import Completer
from ._job import ClaimedJob, Outcome
from ._leases import Leases
from ._promote import Promoter
from ._state import REDIS_DOWN, Shared

__all__ = ["ClusterClaimer", "ClusterCompleter", "ClusterLeases", "ClusterPromoter", "Lanes"]

_SUSPENSION_CHECK = 1.0  # seconds between reads of RQ's suspension key (another slot)


class Lanes:
    """The per-queue names of one worker: its alias and the lifecycle stream of each of its queues."""

    def __init__(self, w: Shared) -> None:
        cfg = w.cfg
        self.alias = {q: worker_alias(cfg.name, q) for q in cfg.queues}
        self.stream = {q: lifecycle_stream(cfg.prefix, q, cluster=True) for q in cfg.queues}


class ClusterClaimer(Claimer):
    """Claims queue by queue (each call in its queue's slot, through the worker's claiming list there).
    Idle, it blocks on every queue at once: one ``BLMOVE`` per queue into its claiming list, the others
    cancelled when one delivers (an id a cancelled one moved waits in that list for the next claim)."""

    def __init__(self, w: Shared, dispatch: Callable[[ClaimedJob], None]) -> None:
        super().__init__(w, dispatch)
        self.line, self.pipelined = None, False
        self.lanes = Lanes(w)
        self._suspension_read = 0.0

    def lane_call(self, q: str, n: int) -> ClaimCall:
        """One claim of up to ``n`` jobs of ``q``: the ids in the worker's claiming list of ``q`` first."""
        first_exec = self._exec_seq
        self._exec_seq += n
        cfg = self.cfg
        return ClaimCall(
            self.keys, self.lanes.alias[q], self.lanes.stream[q], "", "", cfg.lease, n, cfg.lifecycle_maxlen,
            q, True, [], [q], self._exec_base, first_exec,
        )  # fmt: skip

    async def claim(self, n: int, *, given: list[str] | None = None, given_queue: str = "") -> int:
        if n <= 0 or await self._suspended():
            return 0
        count = 0
        for q in self.paused.active(self.queues):
            count += self.take(await self.scripts.call(self.lane_call(q, n - count)))
            if count >= n or self.suspended:
                break
        return count

    async def _suspended(self) -> bool:
        """RQ's suspension (another slot than the queues'), read at most once a second."""
        if time.monotonic() - self._suspension_read >= _SUSPENSION_CHECK:
            self._suspension_read = time.monotonic()
            if await self._r.exists(self.keys.suspended):
                self.take([b"suspended"])
        return self.suspended

    async def block(self, n: int) -> int:
        timeout = max(1, round(self.cfg.poll_timeout))
        queues = await self._unpaused(self.paused.active(self.queues))
        if not queues:
            return -1
        moves = {
            asyncio.ensure_future(
                self._r.blmove(self.keys.queue(q), self._claiming(q), timeout, "LEFT", "RIGHT")
            ): q
            for q in queues
        }
        try:
            done, _ = await asyncio.wait(moves, return_when=asyncio.FIRST_COMPLETED)
        finally:  # the others (or all, at a stop): what one of them moved waits in its claiming list
            for task in moves:
                task.cancel()
            await asyncio.gather(*moves, return_exceptions=True)
        delivered = False
        for task in done:
            exc = task.exception()
            if exc is not None:
                self.paused.failed(moves[task], f"BLMOVE: {exc}")
            elif task.result() is not None:
                delivered = True
        return await self.claim(n) if delivered else 0

    async def queues_empty(self) -> bool:
        if not await super().queues_empty():
            return False
        # ids a cancelled BLMOVE moved wait in the claiming lists: a burst worker takes them before it ends
        async with self._r.pipeline(transaction=False) as pipe:
            for q in self.queues:
                pipe.llen(self._claiming(q))
            return not any(n for n in await pipe.execute(raise_on_error=False) if isinstance(n, int))

    def _claiming(self, q: str) -> str:
        return claiming_list(self.cfg.prefix, self.lanes.alias[q])

    async def _unpaused(self, queues: list[str]) -> list[str]:
        if not queues:
            return []
        flags = await self._r.mget_nonatomic([paused_queue(self.cfg.prefix, q) for q in queues])
        return [q for q, flag in zip(queues, flags, strict=True) if flag is None]


class ClusterCompleter(Completer):
    """Records a batch's outcomes one call per queue (in the worker's name there)."""

    def __init__(self, w: Shared) -> None:
        super().__init__(w)
        self.lanes = Lanes(w)

    def batch(self, outcomes: list[Outcome]) -> FinishCall:
        call = super().batch(outcomes)  # outcomes of one queue (see record_all)
        q = outcomes[0].job.queue
        call.worker, call.stream = self.lanes.alias[q], self.lanes.stream[q]
        return call

    async def record_all(self, outcomes: list[Outcome]) -> None:
        by_queue: dict[str, list[Outcome]] = {}
        for o in outcomes:
            by_queue.setdefault(o.job.queue, []).append(o)
        await asyncio.gather(*(self.record(group, self.batch(group)) for group in by_queue.values()))


class ClusterLeases(Leases):
    """Registers the worker cluster-wide and under its alias in each queue's slot; heartbeats and reaps
    one call per queue."""

    def __init__(self, w: Shared, *, pipelined: Callable[[], bool]) -> None:
        super().__init__(w, pipelined=pipelined)
        self.lanes = Lanes(w)

    def registration(self, pipe: Any, now: str) -> None:
        cfg = self.cfg
        for q, alias in self.lanes.alias.items():
            key = self.keys.worker(alias)
            pipe.delete(key)
            pipe.hset(key, mapping={"birth": now, "last_heartbeat": now, "queues": q, "state": "idle"})
            pipe.expire(key, cfg.lease + 60)
            pipe.hset(claiming_registry(cfg.prefix, q), alias, q)

    def unregistration(self, pipe: Any, now: str) -> None:
        for alias in self.lanes.alias.values():
            pipe.hset(self.keys.worker(alias), "death", now)
            pipe.expire(self.keys.worker(alias), 60)
            pipe.delete(self.keys.worker_executions(alias))

    async def heartbeat(self) -> None:
        cfg = self.cfg
        now = time.time()
        running: dict[str, list[tuple[str, str, str]]] = {q: [] for q in cfg.queues}
        for job, _ in self.w.running.jobs.values():
            running.setdefault(job.queue, []).append((job.id, job.execution_id, job.queue))
        ts, nowf = codec.fmt_ts(), repr(now)
        calls = [
            HeartbeatCall(self.keys, self.lanes.alias[q], int(now), ts, nowf, cfg.lease, cfg.lease + 60, jobs)
            for q, jobs in running.items()
            if q in self.lanes.alias
        ]
        replies = await asyncio.gather(*(self.w.scripts.call(c) for c in calls))
        key = self.keys.worker(cfg.name)
        alive = bool(await self._r.expire(key, cfg.lease + 60))  # never recreates an expired registration
        if alive:
            await self._r.hset(key, "last_heartbeat", ts)
            if not all(r[0] for r in replies) and self.registered:  # an alias alone expired: make it again
                async with self._r.pipeline(transaction=False) as pipe:
                    self.registration(pipe, ts)
                    await pipe.execute()
        await self.renewed(alive, [raw for r in replies for raw in r[1:]])

    async def register_death(self) -> None:
        registered = self.registered
        await super().register_death()
        if registered:  # what our claiming lists hold goes back to its queue
            with contextlib.suppress(*REDIS_DOWN):
                await self.reap()

    async def reap(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for q in self.cfg.queues:
            out += self.reported(await self.w.scripts.call(self.reap_call([q], self.lanes.stream[q])))
        return out


class ClusterPromoter(Promoter):
    """Promotes one queue per call (its lock, registry, list and lifecycle stream share its slot)."""

    def __init__(self, w: Shared) -> None:
        super().__init__(w)
        self.lanes = Lanes(w)

    async def promote_once(self, *, scheduled: bool = True) -> int:
        if not scheduled:
            return 0  # no flow limit on a cluster: nothing parked to let go
        cfg = self.cfg
        lock_ttl = self.lock_ttl()
        now, now_ts, maxlen = repr(time.time()), codec.fmt_ts(), cfg.lifecycle_maxlen
        calls = [
            PromoteCall(self.keys, cfg.name, now, now_ts, lock_ttl, self.lanes.stream[q], maxlen, 1000, [q])
            for q in cfg.queues
        ]
        promoted, due = 0, []
        for reply in await asyncio.gather(*(self.scripts.call(c) for c in calls)):
            promoted += self.promoted(reply)
            if self.next_due > 0:
                due.append(self.next_due)
        self.next_due = min(due) if due else -1
        return promoted

    async def release_locks(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.gather(
                *(self.scripts.call(ReleaseLocksCall(self.keys, self.cfg.name, [q])) for q in self.cfg.queues)
            )
