"""Promotion: scheduled jobs (delays, retries) moved to their queue when due, to the millisecond, and jobs
parked by a rate limit let go when a start frees (``_limits.LimitWaker``). Any worker may promote; a short
lock per queue (``promote.lua``) keeps it to one at a time."""

from __future__ import annotations

import asyncio
import math
import time

from ..rq import codec
from ..rq._calls import PromoteCall
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

    async def promote_once(self) -> int:
        """One pass: parked jobs whose moment came, then scheduled jobs due; how many were queued."""
        cfg = self.cfg
        lock_ttl = max(10, math.ceil(3 * cfg.scheduler_interval))  # a dead holder is replaced quickly
        let_go = await self.limits.release(self.scripts, self.keys)  # first: its moment is exact
        now, now_ts, maxlen = repr(time.time()), codec.fmt_ts(), cfg.lifecycle_maxlen
        call = PromoteCall(self.keys, cfg.name, now, now_ts, lock_ttl, cfg.stream, maxlen, 1000, cfg.queues)
        promoted, earliest, *skipped = await self.scripts.call(call)
        for k in range(0, len(skipped), 2):  # keys of the wrong type (promote.lua): skipped, reported
            self.skips.report("promote", skipped[k].decode(), "skipped: " + skipped[k + 1].decode())
        self.next_due = int(earliest)
        return int(promoted) + let_go

    async def run(self) -> None:
        refused = 0.0
        closing = self.signals.closing
        while not closing.is_set():
            try:
                self.promote_at = math.inf  # a job scheduled meanwhile wakes the nap that follows
                await self.promote_once()
                refused = 0.0
            except REDIS_DOWN as exc:
                self.outage.failed(exc)
            except Exception as exc:  # an error reply: log, and try less often while it lasts
                refused = min(refused * 2, 60.0) if refused else self.cfg.scheduler_interval
                what = "promoting scheduled jobs failed"
                log_refused(self.cfg.name, what, exc, f"next try in {refused:.0f}s")
                await self.signals.nap(refused)
                continue
            wait = self.cfg.scheduler_interval
            if self.next_due > 0:  # to the millisecond: a job never starts early, nor a second late
                wait = min(wait, max(self.next_due / 1000 - time.time(), 0.001))
            self.promote_at = time.time() + wait
            # Shorter when jobs parked by a rate limit are due sooner; an earlier delayed job wakes it too.
            await self.limits.nap(wait, closing, self.wake)
            self.wake.clear()

    def scheduled(self, run_at_ms: int) -> None:
        """A job was scheduled at ``run_at_ms``: wake the promoter if that is before its next look."""
        if run_at_ms / 1000 < self.promote_at:
            self.wake.set()
