"""Benchmark tasks and the ``worker`` object for streaq."""

from __future__ import annotations

import asyncio
import os
import time

from _joblog import record
from streaq import Worker

worker = Worker(
    redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
    concurrency=int(os.environ.get("BENCH_CONCURRENCY", "100")),
)


@worker.task()
async def noop(i: int, t: float = 0.0) -> None:
    record(i, time.time(), t)


@worker.task()
async def sleepy(i: int) -> None:
    started = time.time()
    await asyncio.sleep(0.01)
    record(i, started)


@worker.task()
def sync_noop(i: int, t: float = 0.0) -> None:
    record(i, time.time(), t)


if __name__ == "__main__":
    # what `streaq run tasks_streaq:worker` does, minus its per-task INFO logging to the terminal
    import logging

    logging.basicConfig(level=logging.WARNING)
    worker.run_sync()
