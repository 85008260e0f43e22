"""Scenario 5: SIGTERM to a worker running a long async job and a long sync job. It stops taking work;
jobs that finish within the grace period are recorded, the rest go back on their queue as a new attempt;
it leaves ``rq:workers`` and exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from asyncsched._redis import create_redis
from asyncsched.config import Settings
from asyncsched.queue import JobStatus, TaskQueue
from tests.waiting import eventually

from . import chaosjobs, procs

pytestmark = pytest.mark.slow


async def _registered(r: aioredis.Redis) -> set[bytes]:
    return set(await r.smembers("rq:workers"))


@pytest.mark.parametrize(
    ("job_seconds", "grace", "finished"),
    [(2.0, 30.0, True), (120.0, 0.5, False)],
    ids=["finish-within-grace", "put-back-after-grace"],
)
async def test_sigterm_finishes_or_puts_back(
    real_redis_url: str, tmp_path: Path, job_seconds: float, grace: float, finished: bool
) -> None:
    settings = Settings(redis_url=real_redis_url)
    r = create_redis(real_redis_url)
    flags = {"async": tmp_path / "async.flag", "sync": tmp_path / "sync.flag"}
    worker = procs.worker(real_redis_url, tmp_path / "worker.log", "--name", "graceful", "--grace-period",
                          str(grace), "-c", "2", "-t", "2")  # fmt: skip
    try:
        async with TaskQueue(real_redis_url, settings=settings) as q:
            ids = {
                "async": await q.enqueue(
                    chaosjobs.async_mark_and_sleep, args=(str(flags["async"]), job_seconds)
                ),
                "sync": await q.enqueue(chaosjobs.mark_and_sleep, args=(str(flags["sync"]), job_seconds)),
            }
            await eventually(lambda: all(f.exists() for f in flags.values()), 60, "both jobs to start")
            assert await _registered(r) == {b"rq:worker:graceful"}
            # Concurrency 2 is used up: this one waits for a free slot, which a stopping worker must not fill.
            late = await q.enqueue(chaosjobs.ok, args=("late",))
            assert await q.status(late) == JobStatus.QUEUED
            worker.signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = await asyncio.to_thread(worker.wait, 60)
            elapsed = time.monotonic() - signalled
            log = worker.log()
            assert code == 0, log
            assert procs.tracebacks(log) == 0, log
            assert await _registered(r) == set()
            assert await q.workers() == []
            assert await q.status(late) == JobStatus.QUEUED
            assert await q.list_jobs(status=JobStatus.RUNNING) == []
            for job_id in ids.values():
                rec = await q.job(job_id)
                if finished:
                    assert rec.status == JobStatus.SUCCESS, rec
                    assert rec.result == "done"
                else:
                    assert rec.status == JobStatus.QUEUED, rec  # back on the queue as a new attempt
                    assert rec.attempt == 2
            if not finished:
                assert elapsed < 20, f"took {elapsed:.1f}s to stop with a {grace}s grace period\n{log}"
                queued = [rec.id for rec in await q.list_jobs(status=JobStatus.QUEUED)]
                assert sorted(queued) == sorted([*ids.values(), late])
    finally:
        worker.stop()
        await r.aclose()
