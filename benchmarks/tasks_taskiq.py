"""Benchmark tasks and the ``broker`` for taskiq on taskiq-redis's RedisStreamBroker (no result backend)."""

from __future__ import annotations

import asyncio
import os
import time

from _joblog import record
from taskiq_redis import RedisStreamBroker

broker = RedisStreamBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"))


@broker.task
async def noop(i: int, t: float = 0.0) -> None:
    record(i, time.time(), t)


@broker.task
async def sleepy(i: int) -> None:
    started = time.time()
    await asyncio.sleep(0.01)
    record(i, started)


@broker.task
def sync_noop(i: int, t: float = 0.0) -> None:
    record(i, time.time(), t)
