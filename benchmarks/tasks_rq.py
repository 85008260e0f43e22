"""Benchmark jobs for rq (plain functions; rq runs a coroutine function on a fresh event loop)."""

from __future__ import annotations

import asyncio
import time

from _joblog import record


def noop(i: int, t: float = 0.0) -> None:
    record(i, time.time(), t)


async def sleepy(i: int) -> None:
    started = time.time()
    await asyncio.sleep(0.01)
    record(i, started)


sync_noop = noop
