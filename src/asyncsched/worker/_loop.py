"""The claim loop: claim as many jobs as there are free slots, block (without polling) when there is
nothing, back off while Redis is away or refuses; in burst mode, return once nothing is left to run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from ._claim import Claimer
from ._limits import parked
from ._state import REDIS_DOWN, Shared, log_refused

__all__ = ["ClaimLoop"]

log = logging.getLogger("asyncsched.worker")


class ClaimLoop:
    """Runs until a stop (or, in burst mode, until the queues are empty, nothing runs and no job of its
    queues is parked by a limit). ``promote``: one promotion pass (a burst worker promotes on its own)."""

    def __init__(self, w: Shared, claimer: Claimer, promote: Callable[[], Awaitable[int]]) -> None:
        self.cfg, self.signals, self.running = w.cfg, w.signals, w.running
        self.limits, self.outage, self._r = w.limits, w.outage, w.redis
        self.claimer, self.promote = claimer, promote

    async def run(self) -> None:
        """Survives Redis outages (backs off and retries until Redis answers again) and any error reply
        (logged; the queue concerned, or the whole loop, backs off). Only a stop ends it."""
        backoff = 0.1
        refused = 0.0
        while not self.signals.stop.is_set():
            try:
                if await self.step():
                    return
                backoff = 0.1
                refused = 0.0
                self.outage.answered()
            except REDIS_DOWN as exc:
                self.outage.failed(exc)
                await self.signals.pause(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:  # an error reply (or a bug of ours): log it, pause, go on
                refused = min(refused * 2, 60.0) if refused else 1.0
                log_refused(self.cfg.name, "claiming failed", exc, f"retrying in {refused:.0f}s")
                await self.signals.pause(refused)

    async def _more_threads(self, n: int) -> int:
        """How many jobs to claim now when only ``n`` threads are free: sync jobs are claimed only for free
        threads (a claimed job is "started" for RQ). With few threads free, a moment's wait lets more of
        them free up, so one claim round trip fetches a batch instead of one or two jobs. Bounded: at most
        2 ms before claiming what is free."""
        running, cfg = self.running, self.cfg
        deadline = time.monotonic() + 0.002
        while n < cfg.threads // 2 and (left := deadline - time.monotonic()) > 0:
            await running.wait_slot(left)
            n = min(running.capacity(), cfg.batch_size)
        return n

    async def step(self) -> bool:
        """One step of the claim loop; ``True`` when a burst worker is done."""
        claimer = self.claimer
        if claimer.suspended:
            return await self._while_suspended()
        if self.running.capacity() <= 0:
            await self.running.wait_slot()
            return False
        n = min(self.running.capacity(), self.cfg.batch_size)
        if self.running.sync_running > 0 and 0 < n < self.cfg.threads // 2:
            n = await self._more_threads(n)  # (no coroutine on the common path: async jobs, or many free)
        if not claimer.paused.active(claimer.queues):  # every queue paused after error replies
            if self.cfg.burst and self.running.idle():
                return True
            await self.signals.pause(max(claimer.paused.next_resume(), 0.05))
            return False
        if await claimer.claim(n):
            return False
        if not self.cfg.burst:
            await self._block(n)
            return False
        return await self._burst_step(n)

    async def _block(self, n: int) -> None:
        taken = await self.claimer.block(n)
        if taken < 0:  # every queue paused by an operator: look again after the poll timeout (or at stop)
            await self.signals.pause(self.cfg.poll_timeout)
        elif taken:
            await asyncio.sleep(0)  # a worker woken from idle starts its jobs before its next command

    async def _burst_step(self, n: int) -> bool:
        """Nothing claimed in burst mode: promote, wait for parked jobs, or say the worker is done."""
        if self.limits.waiting():
            # jobs parked by a rate limit: they come back onto their queue when a start frees (let go by our
            # promoter, or another worker's), which wakes the blocking pop at once. Not exiting, it leaves
            # scheduled jobs to the promoter loop (one round trip less per window's turn)
            await self._block(n)
            return False
        if await self.promote():
            return False
        if not self.running.idle():
            await self.running.wait_slot(self.cfg.poll_timeout)
            return False
        if not await self.claimer.queues_empty():
            return False
        if await parked(self._r, self.claimer.keys, self.claimer.queues):
            # jobs of our queues wait for a limit held elsewhere: they come back onto their queue when
            # it frees (a holder's outcome, a rate window), which wakes the blocking pop
            await self._block(n)
            return False
        # a job let go between the two reads is back on its queue by now (both moves are atomic)
        return bool(await self.claimer.queues_empty())

    async def _while_suspended(self) -> bool:
        """Suspended (RQ's ``<p>:suspended`` key): claim nothing; check again each second (as RQ's worker),
        and say so in the worker hash. A burst worker stops, as RQ's does; running jobs finish."""
        keys, name = self.claimer.keys, self.cfg.name
        if self.cfg.burst:
            log.warning("worker %s: suspended in burst mode, exiting", name)
            return True
        if await self._r.exists(keys.suspended):
            with contextlib.suppress(RedisError):
                await self._r.hset(keys.worker(name), "state", "suspended")
            await self.signals.pause(1.0)
            return False
        self.claimer.suspended = False
        with contextlib.suppress(RedisError):
            await self._r.hset(keys.worker(name), "state", "idle")
        log.warning("worker %s: resumed", name)
        return False
