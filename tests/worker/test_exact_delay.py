"""Exact delays: ``delay=`` / ``at=`` start on the millisecond and never early, while the scheduled
registry's score stays RQ's whole seconds (rounded up, so stock RQ never starts one of our jobs early)."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime

import redis.asyncio as aioredis

from asyncsched.config import Settings
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.worker import Worker
from tests import jobs

from .test_rq_interop import rq_cli

LATE = 0.5
"""How late a start may be on a loaded test machine (a whole second was the old granularity)."""


def _fraction_after(now: float, fraction: float) -> float:
    """A time 1-2 s from ``now`` at ``fraction`` of its second: the old whole-second score fails at it."""
    return math.floor(now) + 2 + fraction


async def test_score_is_whole_seconds_rounded_up_and_the_exact_time_is_kept(
    queue: TaskQueue, redis: aioredis.Redis
) -> None:
    when = _fraction_after(time.time(), 0.25)
    job_id = await queue.enqueue(jobs.stamp, at=datetime.fromtimestamp(when, UTC))
    assert await redis.zscore("rq:scheduled:default", job_id) == math.floor(when) + 1
    assert int(await redis.hget(f"rq:job:{job_id}", "asyncsched_run_at")) == round(when * 1000)
    whole = await queue.enqueue(jobs.stamp, at=datetime.fromtimestamp(math.floor(when) + 5, UTC))
    assert await redis.zscore("rq:scheduled:default", whole) == math.floor(when) + 5


async def test_delayed_jobs_start_on_time_never_early(
    queue: TaskQueue, redis_url: str, wsettings: Settings
) -> None:
    # the default promotion interval (1 s): a new job wakes the promoter, it does not wait for a poll
    async with Worker(redis=redis_url, settings=wsettings) as worker:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.commands.listening.wait(), 10)
        asked: dict[str, float] = {}
        for delay in (0.05, 0.25, 0.6):
            before = time.time()
            asked[await queue.enqueue(jobs.stamp, delay=delay)] = before + delay
        base = time.time()
        for fraction in (0.1, 0.5, 0.9):
            when = _fraction_after(base, fraction)
            asked[await queue.enqueue(jobs.stamp, at=datetime.fromtimestamp(when, UTC))] = when
        try:
            for job_id, when in asked.items():
                started = await queue.result(job_id, wait=20)
                assert started >= when, f"{job_id} started {when - started:.3f} s early"
                assert started - when < LATE, f"{job_id} started {started - when:.3f} s late"
        finally:
            worker.request_stop()
            await task


async def test_a_new_job_wakes_an_idle_promoter(
    queue: TaskQueue, redis_url: str, wsettings: Settings
) -> None:
    async with Worker(redis=redis_url, settings=wsettings, scheduler_interval=60) as worker:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.commands.listening.wait(), 10)
        before = time.time()
        job_id = await queue.enqueue(jobs.stamp, delay=0.25)
        try:
            started = await queue.result(job_id, wait=20)
            assert before + 0.25 <= started < before + 0.25 + LATE
        finally:
            worker.request_stop()
            await task


async def test_stock_rq_runs_our_delayed_job_no_earlier_than_asked(real_redis_url: str) -> None:
    settings = Settings(redis_url=real_redis_url)
    async with TaskQueue(real_redis_url, settings=settings) as queue:
        when = time.time() + 0.3
        job_id = await queue.enqueue(jobs.stamp, at=datetime.fromtimestamp(when, UTC))
        while time.time() < math.ceil(when):  # RQ's scheduler promotes by whole-second scores
            await asyncio.sleep(0.05)
        args = ["worker", "--burst", "--with-scheduler", "--serializer", "rq.serializers.JSONSerializer"]
        proc = await asyncio.to_thread(rq_cli, *args, url=real_redis_url)
        assert proc.returncode == 0, proc.stderr
        assert await queue.status(job_id) == JobStatus.SUCCESS
        assert await queue.result(job_id) >= when
