"""The worker's side of a complete history: the heartbeat/finish race, and outcomes of vanished jobs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis.asyncio as aioredis

from asyncsched._keys import lifecycle_stream
from asyncsched._lifecycle import LifecycleRecord
from asyncsched.config import Settings
from asyncsched.queue import TaskQueue
from asyncsched.worker import Worker
from tests import jobs
from tests.waiting import eventually


async def test_heartbeat_right_after_finish_stops_nothing(
    queue: TaskQueue, redis_url: str, wsettings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A heartbeat that runs after finish.lua recorded a job but before the worker forgot it sees the job
    'no longer started by this worker': it must not log (or act on) a stop of a job that just finished."""
    job_id = await queue.enqueue(jobs.async_add, args=(1, 2))
    async with Worker(redis=redis_url, settings=wsettings, burst=True) as worker:
        real_run = worker._scripts._run  # what every call on the pool runs (typed or by name)
        beats: list[Any] = []

        async def run(name: str, args: list[Any], keys: list[Any], parse: Any) -> Any:
            reply = await real_run(name, args, keys, parse)
            if name == "heartbeat":
                beats.append(reply)
            if name == "finish":  # the race, made certain: a heartbeat between the script and the pop
                await worker.leases.heartbeat()
            return reply

        worker._scripts._run = run  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO, logger="asyncsched"):
            await worker.run()
    assert any(job_id.encode() in beat[1:] for beat in beats)  # the heartbeat saw the job finished
    assert not [r for r in caplog.records if "stopping" in r.getMessage()]
    assert await queue.result(job_id) == 3


async def test_outcome_of_a_job_whose_hash_vanished_is_recorded(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    """The job hash disappears while the job runs (Redis lost its data, or someone deleted it): a heartbeat
    does not stop the job, and the worker still writes its outcome to the lifecycle stream, from what it
    knew when it claimed the job."""
    job_id = await queue.enqueue(jobs.async_sleep, args=(0.5,), agent_name="ag", task_name="tk")
    async with Worker(redis=redis_url, settings=wsettings, burst=True) as worker:
        runner = asyncio.create_task(worker.run())

        async def started() -> bool:
            return await redis.hget(f"rq:job:{job_id}", "status") == b"started"

        await eventually(started, what="the job to start")
        await redis.delete(f"rq:job:{job_id}")
        await worker.leases.heartbeat()  # a vanished hash is no stop request: the job runs on
        await runner
    records = [LifecycleRecord.decode(f) for _, f in await redis.xrange(lifecycle_stream("rq"))]
    done = [r for r in records if r.job_id == job_id and r.kind == "success"]
    assert len(done) == 1
    rec = done[0]
    assert (rec.attempt, rec.agent_name, rec.task_name, rec.worker) == (1, "ag", "tk", worker.name)
    assert rec.function == "tests.jobs.async_sleep"
    assert rec.started_at is not None
    assert rec.ended_at is not None
    assert not await redis.exists(f"rq:job:{job_id}")  # nothing recreated in Redis
