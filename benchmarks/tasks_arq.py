"""Benchmark jobs and ``WorkerSettings`` for arq (settings read from the harness's environment)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from _joblog import record
from arq.connections import RedisSettings


async def noop(ctx: dict[str, Any], i: int, t: float = 0.0) -> None:
    record(i, time.time(), t)


async def sleepy(ctx: dict[str, Any], i: int) -> None:
    started = time.time()
    await asyncio.sleep(0.01)
    record(i, started)


class WorkerSettings:
    functions = [noop, sleepy]
    redis_settings = RedisSettings.from_dsn(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"))
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "100"))
    poll_delay = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.5"))
    handle_signals = True


if __name__ == "__main__":
    # what `arq tasks_arq.WorkerSettings` does, minus its per-job INFO logging to the terminal
    import logging

    from arq.worker import run_worker

    logging.basicConfig(level=logging.WARNING)
    run_worker(WorkerSettings)  # type: ignore[arg-type]
