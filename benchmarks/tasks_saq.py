"""Benchmark jobs and worker ``settings`` for saq (jobs take keyword arguments)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from _joblog import record
from saq import Queue


async def noop(ctx: Any, *, i: int, t: float = 0.0) -> None:
    record(i, time.time(), t)


async def sleepy(ctx: Any, *, i: int) -> None:
    started = time.time()
    await asyncio.sleep(0.01)
    record(i, started)


def sync_noop(ctx: Any, *, i: int, t: float = 0.0) -> None:
    record(i, time.time(), t)


queue = Queue.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"))

settings = {
    "queue": queue,
    "functions": [noop, sleepy, sync_noop],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "100")),
}
