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
from collections.abc import Sequence
from typing import Any

from .._keys import limit_key, limit_keys
from ..rq import codec
from ..rq._calls import LimitsCall
from ..rq._scripts import Scripts
from ..rq.jobhash import JobField
from ..rq.keys import RQKeys

__all__ = ["LimitWaker", "parked"]

_TIDY_EVERY = 5.0  # seconds between full passes over every key in use


class LimitWaker:
    """When the jobs parked by a rate limit may go; wakes the promoter early for them."""

    def __init__(self) -> None:
        self.due = -1.0  # earliest time a parked job may start (epoch s), -1 when none is known
        self._event = asyncio.Event()
        self._last_tidy = 0.0
        self._woken = 0

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
        elif self.due < 0 or self.due > time.time():
            return 0
        woken = self._woken
        moved, due = await scripts.call(LimitsCall(keys, repr(time.time()), codec.fmt_ts(), tidy))
        known = float(due)
        if self._woken != woken and self.due > 0:  # a claim parked a job meanwhile: keep the earlier time
            known = self.due if known < 0 else min(known, self.due)
        self.due = known
        if moved:  # a burst worker napping until the next due time claims them now
            self._event.set()
        return int(moved)

    async def nap(self, wait: float, *stops: asyncio.Event) -> None:
        """Sleep ``wait`` seconds, less if parked jobs are due sooner; a new earlier due or any of
        ``stops`` ends it."""
        self._event.clear()
        if self.due > 0:
            wait = min(wait, max(self.due - time.time(), 0.0005))
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
