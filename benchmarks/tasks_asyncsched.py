"""Benchmark jobs for asyncsched (enqueued by path, ``tasks_asyncsched.noop``, like RQ's dotted names)."""

from __future__ import annotations

import asyncio
import time

from _joblog import record


async def noop(i: int, t: float = 0.0) -> None:
    record(i, time.time(), t)


async def sleepy(i: int) -> None:
    started = time.time()
    await asyncio.sleep(0.01)
    record(i, started)


def sync_noop(i: int, t: float = 0.0) -> None:
    record(i, time.time(), t)
