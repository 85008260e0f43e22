"""Leases and retries on every backend: the reaper takes only lapsed leases, heartbeats renew them, and each
retry waits its own interval (RQ's rule), however long."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from asyncsched.config import Settings
from asyncsched.queue import JobStatus, Retry, TaskQueue
from asyncsched.testing import run_burst
from asyncsched.worker import Worker
from tests import jobs
from tests.waiting import eventually


async def _wip(redis: aioredis.Redis) -> dict[str, float]:
    rows = await redis.zrange("rq:wip:default", 0, -1, withscores=True)
    return {member.decode(): score for member, score in rows}


async def test_a_claim_leases_the_job_for_the_workers_lease(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    """The claim script itself leases a started job until now + lease (no heartbeat has run: the worker's
    loops are not started), so a reaper cannot take it before its first heartbeat."""
    job_id = await queue.enqueue(jobs.async_add, args=(1, 2))
    async with Worker(redis=redis_url, settings=wsettings, lease=30) as worker:
        before = time.time()
        reply = await worker._scripts.call(worker.claimer.call(1, [], ""))
        assert reply[0].decode() == job_id
        ((member, deadline),) = (await _wip(redis)).items()
        assert member.startswith(job_id + ":")
        assert int(before) + 30 <= deadline <= time.time() + 30
        assert await worker.reap() == []


async def test_the_reaper_takes_only_lapsed_leases(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis, tmp_path: Path
) -> None:
    flag = tmp_path / "running"
    job_id = await queue.enqueue(jobs.async_touch_and_sleep, args=(str(flag), 60))
    live = Worker(redis=redis_url, settings=wsettings, heartbeat_interval=0.2, lease=30, grace_period=0)
    async with live, Worker(redis=redis_url, settings=wsettings, name="reaper") as reaper:
        runner = asyncio.create_task(live.run())
        try:
            await eventually(flag.exists, what="the job to start")
            ((member, deadline),) = (await _wip(redis)).items()
            assert member.startswith(job_id + ":")
            assert deadline >= time.time() + 20  # leased for its worker's lease (30 s), not already lapsed
            # a live worker's job, its lease in the future: not the reaper's to take
            assert await reaper.reap() == []
            assert await queue.status(job_id) == JobStatus.RUNNING
            assert list(await _wip(redis)) == [member]
            # the same execution with its lease lapsed (as if its worker had stalled): reaped
            await redis.zadd("rq:wip:default", {member: int(time.time()) - 1})
            assert await reaper.reap() == [(job_id, "failed")]
            assert await queue.status(job_id) == JobStatus.FAILED
            assert await _wip(redis) == {}
            # the live worker learns at its next heartbeat that the job is no longer its own, and stops it
            await eventually(lambda: live.running_jobs == [], what="the stalled job to be stopped")
        finally:
            live.request_stop()
            await asyncio.wait_for(runner, 30)
    assert await queue.status(job_id) == JobStatus.FAILED  # the reaper's verdict stands


async def test_heartbeats_renew_the_lease_of_a_running_job(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis, tmp_path: Path
) -> None:
    flag = tmp_path / "running"
    job_id = await queue.enqueue(jobs.async_touch_and_sleep, args=(str(flag), 60))
    async with Worker(
        redis=redis_url, settings=wsettings, heartbeat_interval=0.2, lease=2, grace_period=0
    ) as worker:
        runner = asyncio.create_task(worker.run())
        try:
            await eventually(flag.exists, what="the job to start")
            ((member, first),) = (await _wip(redis)).items()

            async def renewed() -> bool:
                return (await _wip(redis)).get(member, 0) > first

            await eventually(renewed, timeout=20, what="a heartbeat to push the lease further out")
            assert await queue.status(job_id) == JobStatus.RUNNING
            assert await worker.reap() == []
        finally:
            worker.request_stop()
            await asyncio.wait_for(runner, 30)


async def test_each_retry_waits_its_own_interval(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    intervals = [5, 30, 3600]
    job_id = await queue.enqueue(jobs.fail, args=("again",), retry=Retry(3, intervals))
    for attempt, wait in enumerate(intervals, start=1):
        before = time.time()
        await run_burst(redis=redis_url, settings=wsettings)
        after = time.time()
        assert await queue.status(job_id) == JobStatus.SCHEDULED, attempt
        due = await redis.zscore("rq:scheduled:default", job_id)
        assert due is not None
        # the n-th retry waits the n-th interval (not the first one, not capped)
        assert int(before + wait) <= due <= int(after + wait), (attempt, due - before, wait)
        rec = await queue.job(job_id)
        assert rec.retries_left == len(intervals) - attempt
        await redis.zadd("rq:scheduled:default", {job_id: 0})  # make it due now
    await run_burst(redis=redis_url, settings=wsettings)
    rec = await queue.job(job_id)
    assert rec.status == JobStatus.FAILED  # no retries left
    assert rec.attempt == len(intervals) + 1
    assert await redis.zscore("rq:scheduled:default", job_id) is None


class _Outage:
    """Makes the named scripts of a worker fail as if Redis were unreachable, ``times`` calls each."""

    def __init__(self, worker: Worker, names: set[str], times: int) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        self.failed: dict[str, int] = dict.fromkeys(names, 0)
        self.times = times
        original = worker._scripts._run  # what every call on the pool runs (typed or by name)

        async def run(name: str, args: list[object], keys: list[object], parse: Any) -> object:
            if name in self.failed and self.failed[name] < self.times:
                self.failed[name] += 1
                raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
            return await original(name, args, keys, parse)

        worker._scripts._run = run  # type: ignore[method-assign]


async def test_outcomes_finished_while_redis_is_down_are_recorded_when_it_is_back(
    queue: TaskQueue, redis_url: str, wsettings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    ok = await queue.enqueue(jobs.add, args=(2, 3))
    bad = await queue.enqueue(jobs.fail, args=("down",))
    async with Worker(redis=redis_url, settings=wsettings, burst=True) as worker:
        outage = _Outage(worker, {"finish"}, times=4)
        await asyncio.wait_for(worker.run(), 60)
    assert outage.failed == {"finish": 4}  # recording was refused four times, then went through
    assert await queue.result(ok) == 5
    assert (await queue.job(bad)).status == JobStatus.FAILED
    assert worker.processed == 2
    # the outage is logged (as one line per outage, not per retry: other loops reaching Redis meanwhile
    # log "Redis is back", so with only this script failing there may be a line per attempt at most)
    outages = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert 1 <= len(outages) <= 4


async def test_promotion_goes_on_after_redis_was_down(
    queue: TaskQueue, redis_url: str, wsettings: Settings
) -> None:
    job_id = await queue.enqueue(jobs.add, args=(1, 2), delay=0.2)
    assert await queue.status(job_id) == JobStatus.SCHEDULED
    async with Worker(redis=redis_url, settings=wsettings, scheduler_interval=0.05) as worker:
        outage = _Outage(worker, {"promote"}, times=3)
        task = asyncio.create_task(worker.run())
        try:
            assert await queue.result(job_id, wait=30) == 3
        finally:
            worker.request_stop()
            await asyncio.wait_for(task, 30)
    assert outage.failed == {"promote": 3}


async def test_a_job_id_queued_twice_runs_once(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """A job id pushed onto its queue twice (an operator's double requeue, a producer's retried push) is
    started once: the claim skips a job already started or finished, as RQ's worker does."""
    log = tmp_path / "runs"
    job_id = await queue.enqueue(jobs.note, args=(str(log), "ran"))
    await redis.rpush("rq:queue:default", job_id)  # the same id a second time, right behind the first
    assert await redis.lrange("rq:queue:default", 0, -1) == [job_id.encode()] * 2
    await run_burst(redis=redis_url, settings=wsettings)
    assert jobs.noted(str(log)) == ["ran"]
    assert await queue.status(job_id) == JobStatus.SUCCESS
    # and once more after it finished: still not run again
    await redis.rpush("rq:queue:default", job_id)
    await run_burst(redis=redis_url, settings=wsettings)
    assert jobs.noted(str(log)) == ["ran"]
