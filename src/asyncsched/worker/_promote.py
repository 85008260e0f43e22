"""Promotion: scheduled jobs (delays, retries) moved to their queue when due, to the millisecond, and jobs
parked by a rate limit let go when a start frees (``_limits.LimitWaker``). Any worker may promote; a short
lock per queue (``promote.lua``) keeps it to one at a time."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from .._redis.scripts import Reply, as_int, as_text
from ..rq import codec
from ..rq._calls import PromoteCall, ReleaseLocksCall
from ._state import REDIS_DOWN, Shared, log_refused

__all__ = ["Promoter"]


class Promoter:
    """The promoter loop. ``promote_at``: when it wakes next (epoch s); a job scheduled sooner (announced
    on the queue's wake channel, see :mod:`._commands`) sets ``wake`` to wake it early."""

    def __init__(self, w: Shared) -> None:
        self.cfg, self.scripts, self.limits, self.signals = w.cfg, w.scripts, w.limits, w.signals
        self.outage, self.skips, self.keys = w.outage, w.skips, w.keys
        self.next_due = -1  # earliest scheduled run-at seen by the last promotion (epoch ms)
        self.promote_at = 0.0  # when the promoter wakes next (epoch s); an earlier job wakes it sooner
        self.wake = asyncio.Event()

    async def promote_once(self, *, scheduled: bool = True) -> int:
        """One pass: parked jobs whose moment came, then (unless ``scheduled`` is false: woken only for
        those) scheduled jobs due; how many were queued."""
        cfg = self.cfg
        let_go = await self.limits.release(self.scripts, self.keys)  # first: its moment is exact
        if not scheduled:
            return let_go
        now, now_ts, maxlen = repr(time.time()), codec.fmt_ts(), cfg.lifecycle_maxlen
        call = PromoteCall(
            self.keys, cfg.name, now, now_ts, self.lock_ttl(), cfg.stream, maxlen, 1000, cfg.queues
        )
        return self.promoted(await self.scripts.call(call)) + let_go

    def lock_ttl(self) -> int:
        """The scheduler lock's TTL (s): short, so that a dead holder is replaced quickly."""
        return max(10, math.ceil(3 * self.cfg.scheduler_interval))

    def promoted(self, reply: list[Reply]) -> int:
        """How many jobs ``promote.lua`` queued; notes the earliest run-at it saw (``next_due``) and reports
        the keys of the wrong type it skipped."""
        promoted, earliest, *skipped = reply
        for k in range(0, len(skipped), 2):  # keys of the wrong type (promote.lua): skipped, reported
            self.skips.report("promote", as_text(skipped[k]), "skipped: " + as_text(skipped[k + 1]))
        self.next_due = as_int(earliest)
        return as_int(promoted)

    async def release_locks(self) -> None:
        """Release the scheduler locks this worker holds (at its stop; errors ignored)."""
        with contextlib.suppress(Exception):
            await self.scripts.call(ReleaseLocksCall(self.keys, self.cfg.name, self.cfg.queues))

    async def run(self) -> None:
        refused = 0.0
        closing = self.signals.closing
        look_at = 0.0  # when the scheduled registries are looked at next (epoch s)
        while not closing.is_set():
            # woken sooner for jobs parked by a rate only: the scheduled registries wait for their turn
            looked = time.time() >= look_at
            try:
                self.promote_at = math.inf  # a job scheduled meanwhile wakes the nap that follows
                await self.promote_once(scheduled=looked)
                refused = 0.0
            except REDIS_DOWN as exc:
                self.outage.failed(exc)
            except Exception as exc:  # an error reply: log, and try less often while it lasts
                refused = min(refused * 2, 60.0) if refused else self.cfg.scheduler_interval
                what = "promoting scheduled jobs failed"
                log_refused(self.cfg.name, what, exc, f"next try in {refused:.0f}s")
                await self.signals.nap(refused)
                continue
            if looked:
                wait = self.cfg.scheduler_interval
                if self.next_due > 0:  # to the millisecond: a job never starts early, nor a second late
                    wait = min(wait, max(self.next_due / 1000 - time.time(), 0.001))
                look_at = time.time() + wait
            self.promote_at = look_at
            # Shorter when jobs parked by a rate limit are due sooner; an earlier delayed job wakes it too.
            await self.limits.nap(max(look_at - time.time(), 0.001), closing, self.wake)
            if self.wake.is_set():
                look_at = 0.0
            self.wake.clear()

    def scheduled(self, run_at_ms: int) -> None:
        """A job was scheduled at ``run_at_ms``: wake the promoter if that is before its next look."""
        if run_at_ms / 1000 < self.promote_at:
            self.wake.set()
