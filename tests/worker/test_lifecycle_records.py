"""The lifecycle records the queue and the worker write (enqueue.lua, claim.lua, finish.lua): packed, one
stream field and the free text; a value holding the separator in a field of its own, read back right."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from asyncsched._keys import lifecycle_stream
from asyncsched._lifecycle import PACKED, SEP, LifecycleRecord
from asyncsched.config import Settings
from asyncsched.queue import TaskQueue
from asyncsched.worker import Worker
from tests import jobs


async def _run(redis_url: str, wsettings: Settings, queue: str) -> str:
    async with TaskQueue(redis_url, settings=wsettings) as q:
        job_id = await q.enqueue(jobs.add, args=(1, 2), queue=queue)
    async with Worker([queue], redis=redis_url, settings=wsettings, burst=True) as worker:
        await worker.run()
    return job_id


async def test_the_queue_and_worker_write_packed_records(
    redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    job_id = await _run(redis_url, wsettings, "default")
    entries = await redis.xrange(lifecycle_stream("rq"))
    assert [list(f) for _, f in entries] == [[PACKED.encode()]] * 2 + [[PACKED.encode(), b"result"]]
    records = [LifecycleRecord.decode(f) for _, f in entries]
    assert [(r.kind, r.job_id, r.queue, r.function) for r in records] == [
        (kind, job_id, "default", "tests.jobs.add") for kind in ("queued", "started", "success")
    ]
    assert records[2].result == "3"


async def test_a_name_holding_the_separator_is_recorded_in_a_field_of_its_own(
    redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    name = f"odd{SEP}queue"
    job_id = await _run(redis_url, wsettings, name)
    entries = await redis.xrange(lifecycle_stream("rq"))
    assert all(f[b"queue"] == name.encode() for _, f in entries)  # never packed
    records = [LifecycleRecord.decode(f) for _, f in entries]
    assert [(r.kind, r.job_id, r.queue, r.function) for r in records] == [
        (kind, job_id, name, "tests.jobs.add") for kind in ("queued", "started", "success")
    ]


async def test_a_promoted_job_is_recorded_queued_with_its_agent_and_function(
    redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    """promote.lua's 'queued' record carries what the job hash says (agent, task, function path)."""
    async with TaskQueue(redis_url, settings=wsettings) as q:
        job_id = await q.enqueue(jobs.add, args=(1, 2), delay=0.05, agent_name="ag", task_name="tk")
        async with Worker(redis=redis_url, settings=wsettings) as worker:
            task = asyncio.create_task(worker.run())
            try:
                assert await q.result(job_id, wait=20) == 3
            finally:
                worker.request_stop()
                await task
    records = [LifecycleRecord.decode(f) for _, f in await redis.xrange(lifecycle_stream("rq"))]
    queued = [r for r in records if r.kind == "queued"]
    assert len(queued) == 1, records  # the promotion's (a scheduled job is first recorded 'scheduled')
    assert (queued[0].job_id, queued[0].agent_name, queued[0].task_name, queued[0].function) == (
        job_id,
        "ag",
        "tk",
        "tests.jobs.add",
    )
