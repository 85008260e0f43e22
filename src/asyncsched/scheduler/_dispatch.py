"""Dispatch: the due entries of the Redis index become claimed ticks, then jobs (a batch per pass).

A pass reads up to ``DUE_BATCH`` due entries, plans each from the task cache (misfire policy), claims them
all in one pipelined round trip (one atomic script per task: compare-and-advance of its entry, so a tick is
claimed by one replica only), enqueues every claimed tick concurrently (the queue coalesces them into few
script calls) and releases their leases in one more round trip. A claimer that dies between claim and
release leaves leases that :mod:`._recovery` takes over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from .. import _tracing
from ..exceptions import ClusterUnsupported, InvalidValue
from ..rq.slots import cluster_tag
from ..store.models import ScheduledTask
from ._base import LEASE, SchedulerBase
from ._cache import TaskView, trigger_of
from ._definition import overlap_of, policy_of
from ._enqueue import Firing, job_id_for
from ._index import DROP, Claim, ClaimRequest, Overlap, from_ms, signature, to_ms
from ._misfire import plan
from ._rows import utc

__all__ = ["DUE_BATCH", "Dispatch"]

log = logging.getLogger("asyncsched.scheduler")

DUE_BATCH = 500
"""Due index entries claimed per pass (more wait for the next pass, which follows at once)."""

_Planned = tuple[TaskView, list[datetime], datetime | None, str]
"""A due entry planned: the task, the ticks to run, the next tick to index, the schedule's signature."""


class Dispatch(SchedulerBase):
    """The firing half of :class:`TaskScheduler`: cache, index rebuild, claims and enqueues of due ticks."""

    async def _reload(self) -> None:
        """Refresh the task cache from SQL (see :class:`TaskCache`)."""
        await self._cache.reload(self._session)

    async def rebuild_index(self) -> None:
        """Make the Redis index match SQL (at start; after a Redis restart nothing is lost). Written a
        chunk at a time as the tasks are read: the entries of 100,000 tasks held at once were a peak of
        tens of MB in every replica. Index keys of a wrong type are deleted first (and logged), to be
        written again here."""
        for key, kind in await self.index.wrong_types():
            log.error("schedule index key %s held a %s; deleted, rebuilt from SQL", key, kind)
        await self._reload()
        now = self.clock()
        entries: list[tuple[str, str, int | None]] = []
        for view in self._cache.views():
            if len(entries) >= 1000:
                await self.index.sync_many(entries)
                entries = []
            task = view.as_task()
            if not view.fireable:
                entries.append((task.id, "", None))
                continue
            nxt = task.next_run_at
            planned = self._planned.get(task.id)
            if (
                planned is not None
                and planned[0] == signature(task)
                and (planned[1] is None or nxt is None or utc(planned[1]) > utc(nxt))
            ):
                nxt = planned[1]
            if nxt is None and task.last_run_at is None and planned is None:
                nxt = trigger_of(task).next_after(now)
            entries.append((task.id, signature(task), None if nxt is None else to_ms(utc(nxt))))
        entries += [(task_id, "", None) for task_id in await self.index.unknown_ids(self._cache)]
        await self.index.sync_many(entries)

    async def run_pending(self, now: datetime | None = None) -> list[Firing]:
        """Claim and enqueue everything due at ``now`` (default: the clock); returns what was fired here."""
        await self._open()
        due: list[tuple[str, int]] | None = None
        if now is None:  # the loop's pass: it may have read them with its wake state already
            due, self._due_read = self._due_read, None
        now = now or self.clock()
        if not due:
            due = await self.index.due(to_ms(now), limit=DUE_BATCH)
        fired = await self._fire_due(due, now) if due else []
        fired.extend(await self._recover(now))
        return fired

    async def _fire_due(self, due: Sequence[tuple[str, int]], now: datetime) -> list[Firing]:
        """Claim ``due`` (``(task id, tick ms)`` read from the index) and enqueue what this replica won."""
        reloaded = False
        pending = list(due)
        work: list[tuple[ScheduledTask, datetime, str]] = []
        for attempt in range(2):
            if not reloaded and any(not self._known(task_id) for task_id, _ in pending):
                await self._reload()
                reloaded = True
            plans = [self._plan(task_id, tick_ms, now) for task_id, tick_ms in pending]
            seen_at = self.clock().timestamp()  # the overlap record's time, one per pass
            requests = [
                self._request(t, ms, p, now, seen_at) for (t, ms), p in zip(pending, plans, strict=True)
            ]
            claims = await self.index.claim_many(requests)
            stale = []
            for (task_id, tick_ms), planned, claim in zip(pending, plans, claims, strict=True):
                if planned is None:
                    continue
                if claim.code == -1 and attempt == 0:  # our copy of the schedule is older than the index
                    stale.append((task_id, tick_ms))
                else:
                    work += await self._claimed(planned, tick_ms, claim)
            if not stale:
                break
            pending = stale
            await self._reload()  # then claim those again
            reloaded = True
        return await self._fire_ticks(work)

    def _known(self, task_id: str) -> bool:
        return self._cache.enabled(task_id)

    def _plan(self, task_id: str, tick_ms: int, now: datetime) -> _Planned | None:
        """The ticks to run and the next tick of a due entry; ``None``: deleted, disabled or unfireable."""
        view = self._cache.get(task_id)
        if view is None or not view.enabled or not view.fireable:
            return None
        task = view.as_task()
        ticks, nxt = plan(task, trigger_of(task), from_ms(tick_ms), now)
        return view, ticks, nxt, signature(task)

    def _request(
        self, task_id: str, tick_ms: int, planned: _Planned | None, now: datetime, seen_at: float
    ) -> ClaimRequest:
        if planned is None:  # deleted or disabled: drop it from the index (unless it moved meanwhile)
            return ClaimRequest(task_id, tick_ms, None, [], to_ms(now), sig=DROP)
        view, ticks, nxt, sig = planned
        task = view.as_task()
        return ClaimRequest(
            task_id,
            tick_ms,
            None if nxt is None else to_ms(nxt),
            [to_ms(t) for t in ticks],
            to_ms(now + LEASE),
            sig,
            [self._job_id(task, t) for t in ticks],
            self._overlap(task, seen_at),
        )

    def _job_id(self, task: ScheduledTask, tick: datetime) -> str:
        """The id the queue stores a tick's job under: on a cluster, after its queue's tag."""
        job_id = job_id_for(task.id, tick)
        return cluster_tag(task.queue, True) + job_id if self.index.cluster else job_id

    async def _claimed(
        self, planned: _Planned, tick_ms: int, claim: Claim
    ) -> list[tuple[ScheduledTask, datetime, str]]:
        """What a claim leaves to enqueue (nothing unless this replica won it); notes the run times."""
        view, ticks, nxt, sig = planned
        task = view.as_task()
        if claim.code == -1:  # SQL itself disagrees with the index (a row edited behind our back)
            log.warning(
                "task %s/%s changed in SQL without notice; re-planned from now", task.agent_name, task.name
            )
            await self.index.sync(task.id, sig, None if nxt is None else to_ms(nxt))
            return []
        if claim.code == 0:
            return []  # another replica claimed it
        if len(ticks) != 1 or ticks[0] != from_ms(tick_ms):
            log.warning(
                "task %s/%s due since %s: running %d tick(s) (misfire policy %s)",
                *(task.agent_name, task.name, from_ms(tick_ms).isoformat(), len(ticks)),
                policy_of(task).value,
            )
        pending = self._sql_updates.get(task.id)  # a run not flushed yet stays the last one
        last = ticks[-1] if ticks else (pending[0] if pending else task.last_run_at)
        self._sql_updates[task.id] = (last, nxt)
        self._planned[task.id] = (sig, nxt)
        work = []
        for tick, decision in zip(ticks, claim.decisions, strict=True):
            if decision == "skip":
                log.info(
                    "task %s/%s: tick %s skipped, its previous run is still under way (overlap: %s)",
                    *(task.agent_name, task.name, tick.isoformat(), overlap_of(task)),
                )
            else:
                work.append((task, tick, decision))
        return work

    def _overlap(self, task: ScheduledTask, now: float) -> Overlap:
        return Overlap(
            overlap_of(task),
            task.queue,
            task.agent_name,
            task.name,
            task.function,
            now,
            self.settings.lifecycle_maxlen,
        )

    async def _fire_ticks(self, work: Sequence[tuple[ScheduledTask, datetime, str]]) -> list[Firing]:
        """Enqueue claimed ticks concurrently, then release the leases of those done in one round trip
        (a tick whose enqueue failed keeps its lease: it is enqueued again when the lease expires)."""
        if not work:
            return []
        outcomes = await asyncio.gather(*(self._enqueue_tick(t, tick, d == "hold") for t, tick, d in work))
        done = [(t.id, to_ms(tick)) for (t, tick, _d), out in zip(work, outcomes, strict=True) if out]
        if self._release_later is None:
            await self.index.done_many(done)
        else:  # the firing loop releases them with the read that follows this pass (one round trip less)
            self._release_later += done
        fired = [out for out in outcomes if isinstance(out, Firing)]
        if self.metrics is not None:
            now = self.clock().timestamp()
            for firing in fired:
                self.metrics.observe_tick(firing.tick, now)
        return fired

    async def _fire_tick(self, task: ScheduledTask, tick: datetime, *, held: bool = False) -> Firing | None:
        """Enqueue one claimed tick and release its lease (the path of a recovered lease)."""
        fired = await self._fire_ticks([(task, tick, "hold" if held else "run")])
        return fired[0] if fired else None

    async def _enqueue_tick(self, task: ScheduledTask, tick: datetime, held: bool) -> Firing | bool:
        """Enqueue one claimed tick: its :class:`Firing`; ``True`` when refused for good (the lease is
        released, nothing runs), ``False`` when it failed (the lease stays)."""
        job_id = self._job_id(task, tick)
        try:
            after = await self.index.held_after(task.id, to_ms(tick)) if held else None
            if _tracing.tracer is None:
                await self._enqueue(task, job_id, tick, after=after)
            else:  # the tick's span: its enqueue (and the run) join the tick's trace
                with _tracing.tick_span(task.agent_name, task.name, tick):
                    await self._enqueue(task, job_id, tick, after=after)
        except (InvalidValue, ClusterUnsupported) as exc:  # refused for good: retrying cannot help
            log.error(
                "task %s/%s: tick %s not enqueued: %s", task.agent_name, task.name, tick.isoformat(), exc
            )
            return True
        except Exception:
            log.exception("enqueue of %s failed; another attempt follows when its lease expires", job_id)
            return False
        log.info("fired %s/%s tick %s as %s", task.agent_name, task.name, tick.isoformat(), job_id)
        return Firing(task.id, task.name, task.agent_name, tick, job_id)

    async def _recover(self, now: datetime) -> list[Firing]:
        """Take over expired leases (:class:`~._recovery.Recovery`)."""
        raise NotImplementedError
