"""The worker's side of flow limits (``rq/scripts/lib_limits.lua``, docs/flow-control.md).

The claim script parks a job over its limit (out of its queue; no worker slot is held). A job parked by a
concurrency cap goes back to its queue when a holder's outcome is recorded (``finish.lua``), which wakes
blocked workers like any push. A job parked by a rate goes back when a start frees: the claim reply says
when, and the worker's promoter runs ``limits.lua`` at that moment (and every few seconds, which also
tidies keys whose holders were lost), so nobody polls.

A burst worker does not exit while jobs of its queues are parked (by a flow limit, or waiting for an RQ 3
``RateLimit`` slot): :func:`parked` says so, and the worker blocks on its queues, where the parked jobs
come back, instead of returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from .._keys import limit_key, limit_keys
from .._redis.scripts import as_bytes, as_int
from ..rq import codec
from ..rq._calls import LimitsCall
from ..rq._scripts import Scripts
from ..rq.jobhash import JobField
from ..rq.keys import RQKeys

__all__ = ["LimitWaker", "parked"]

_TIDY_EVERY = 5.0  # seconds between full passes over every key in use


class LimitWaker:
    """When the jobs parked by a rate limit may go; wakes the promoter early for them.

    Every time of a rate is Redis' (the scripts read ``TIME``): ``due`` is on Redis' clock, and this process'
    clock is corrected by the offset each ``limits.lua`` reply shows (an upper bound of it: a wrong guess
    wakes the promoter early, for one more look, never late), so a worker whose clock differs from Redis'
    neither lets a job go early nor looks again and again until its clock agrees."""

    def __init__(self) -> None:
        self.due = -1.0  # earliest time a parked job may start (Redis' clock, epoch s), -1 when none is known
        self._event = asyncio.Event()
        self._last_tidy = 0.0
        self._woken = 0
        self._offsets: deque[float] = deque(maxlen=16)  # Redis' clock minus ours, upper bounds

    def now(self) -> float:
        """Redis' clock as this process best knows it (epoch s)."""
        return time.time() + (min(self._offsets) if self._offsets else 0.0)

    def wake(self, due: float) -> None:
        """A claim parked a job that may start at ``due``."""
        self._woken += 1
        if self.due < 0 or due < self.due:
            self.due = due
            self._event.set()

    def waiting(self) -> bool:
        """Whether jobs parked by a rate limit are known to wait."""
        return self.due > 0

    async def release(self, scripts: Scripts, keys: RQKeys) -> int:
        """Put back the parked jobs that may start now; how many."""
        mono = time.monotonic()
        tidy = mono - self._last_tidy >= _TIDY_EVERY
        if tidy:
            self._last_tidy = mono
        elif self.due < 0 or self.due > self.now():
            return 0
        woken = self._woken
        sent = time.time()
        moved, due, redis_now = await scripts.call(LimitsCall(keys, repr(sent), codec.fmt_ts(), tidy))
        # the script ran after ``sent``: never below the offset
        self._offsets.append(float(as_bytes(redis_now)) - sent)
        known = float(as_bytes(due))
        if self._woken != woken and self.due > 0:  # a claim parked a job meanwhile: keep the earlier time
            known = self.due if known < 0 else min(known, self.due)
        self.due = known
        return as_int(moved)

    async def nap(self, wait: float, *stops: asyncio.Event) -> None:
        """Sleep ``wait`` seconds, less if parked jobs are due sooner; a new earlier due or any of
        ``stops`` ends it."""
        self._event.clear()
        if self.due > 0:
            wait = min(wait, max(self.due - self.now(), 0.0005))
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._event, *stops)]
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()


async def parked(redis: Any, keys: RQKeys, queues: Sequence[str]) -> int:
    """How many jobs of ``queues`` wait out of their queue for a flow limit or an RQ 3 ``RateLimit`` slot
    (read only when a burst worker finds its queues empty; one round trip per kind of key)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(limit_keys(keys.prefix))
        pipe.smembers(keys.rate_limit_keys)
        ours, rqs = await pipe.execute()
    waits = [limit_key(keys.prefix, k.decode(), "waiting") for k in ours]
    waits += [keys.rate_limit(k.decode(), "rate_limited") for k in rqs]
    if not waits:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for key in waits:
            pipe.zrange(key, 0, -1)
        ids = [i for reply in await pipe.execute() for i in reply]
    if not ids:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(keys.job(job_id.decode()), JobField.ORIGIN, JobField.STATUS)
        fields = await pipe.execute()
    wanted = {q.encode() for q in queues}  # a stale entry (a job cancelled or deleted) is not waited for
    return sum(1 for origin, status in fields if origin in wanted and status == b"rate_limited")
