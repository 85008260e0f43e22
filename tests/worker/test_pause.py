"""Queue-wide operator actions on every backend: pause/resume (honoured by the worker's claim), requeue and
delete of failed jobs, empty."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
import rq

from asyncsched.config import Settings
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.testing import run_burst
from asyncsched.worker import Worker
from tests import jobs

pytestmark = pytest.mark.cluster  # pause, requeue, empty run on a Redis Cluster too


async def test_paused_queue_gives_nothing_until_resumed(
    queue: TaskQueue, redis_url: str, wsettings: Settings
) -> None:
    assert await queue.pause("a") is True
    assert await queue.pause("a") is False
    held = await queue.enqueue(jobs.add, args=(1, 2), queue="a")
    free = await queue.enqueue(jobs.add, args=(3, 4), queue="b")
    assert await queue.paused(["a", "b"]) == {"a"}

    # A burst worker counts a paused queue as having nothing to do: it ends, the held job still waits.
    worker = await run_burst(["a", "b"], redis=redis_url, settings=wsettings)
    assert worker.processed == 1
    assert await queue.result(free) == 7
    assert (await queue.job(held)).status == JobStatus.QUEUED
    assert (await queue.queue_counts())["a"]["queued"] == 1

    assert await queue.resume("a") is True
    assert await queue.resume("a") is False
    worker = await run_burst(["a", "b"], redis=redis_url, settings=wsettings)
    assert worker.processed == 1
    assert await queue.result(held) == 3


@pytest.mark.parametrize("redis_url", ["memory", "redis"], indirect=True)  # a single-node claim call
async def test_claim_puts_back_what_a_blocking_pop_took_from_a_paused_queue(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    # The queue is paused between the worker's check and its BLPOP/BLMOVE: the claim script, which runs
    # right behind the pop, must hand the ids back to the front of the queue, in order, and start nothing.
    ids = [await queue.enqueue(jobs.add, args=(i, i), queue="p") for i in range(3)]
    await queue.pause("p")
    async with Worker(["p"], redis=redis_url, settings=wsettings) as worker:
        popped = await redis.lpop(queue.keys.queue("p"))  # what BLPOP took
        assert popped is not None
        call = worker.claimer.call(4, [popped.decode()], "p")
        assert await worker._scripts.call(call) == []
        claiming = worker.claimer.claiming
        for _ in range(2):  # what BLMOVE moved (a claiming list may hold more than one id)
            await redis.lmove(queue.keys.queue("p"), claiming, "LEFT", "RIGHT")
        call = worker.claimer.call(4, [], "p", use_claiming=True)
        assert await worker._scripts.call(call) == []
    assert [i.decode() for i in await redis.lrange(queue.keys.queue("p"), 0, -1)] == ids
    assert await redis.llen(claiming) == 0
    assert [(await queue.job(i)).status for i in ids] == [JobStatus.QUEUED] * 3


async def test_requeue_and_delete_failed_jobs(queue: TaskQueue, redis_url: str, wsettings: Settings) -> None:
    failed = [await queue.enqueue(jobs.fail, args=(f"n{i}",), queue="f") for i in range(3)]
    ok = await queue.enqueue(jobs.add, args=(1, 1), queue="f")
    await run_burst(["f"], redis=redis_url, settings=wsettings)
    assert sorted(await queue.failed_ids("f")) == sorted(failed)
    assert await queue.count_jobs("f", JobStatus.FAILED) == 3
    assert await queue.count_jobs("f") == 4

    assert sorted(await queue.requeue_failed("f")) == sorted(failed)
    assert await queue.failed_ids("f") == []
    for job_id in failed:
        record = await queue.job(job_id)
        assert (record.status, record.attempt) == (JobStatus.QUEUED, 2)
    await run_burst(["f"], redis=redis_url, settings=wsettings)
    assert sorted(await queue.failed_ids("f")) == sorted(failed)

    assert await queue.delete_failed("f") == 3
    assert await queue.failed_ids("f") == []
    for job_id in failed:
        assert not await queue.redis.exists(queue.keys.job(job_id))
    assert (await queue.job(ok)).status == JobStatus.SUCCESS
    assert await queue.requeue_failed("f") == []
    assert await queue.delete_failed("f") == 0


async def test_empty_removes_waiting_jobs(queue: TaskQueue) -> None:
    ids = [await queue.enqueue(jobs.add, args=(i, i), queue="e") for i in range(3)]
    other = await queue.enqueue(jobs.add, args=(1, 1), queue="other")
    assert await queue.empty("e") == 3
    assert await queue.empty("e") == 0
    assert (await queue.queue_counts())["e"]["queued"] == 0
    for job_id in ids:
        assert not await queue.redis.exists(queue.keys.job(job_id))
    assert (await queue.job(other)).status == JobStatus.QUEUED


async def test_rq_reads_a_requeued_job(real_redis_url: str) -> None:
    import redis as syncredis

    settings = Settings(redis_url=real_redis_url)
    async with TaskQueue(real_redis_url, settings=settings) as queue:
        job_id = await queue.enqueue(jobs.fail, queue="r")
        await run_burst(["r"], redis=real_redis_url, settings=settings)
        assert await queue.requeue_failed("r") == [job_id]
    conn = syncredis.Redis.from_url(real_redis_url)
    try:
        rq_queue = rq.Queue("r", connection=conn)
        assert rq_queue.job_ids == [job_id]
        assert rq.job.Job.fetch(job_id, connection=conn).get_status() == "queued"
        assert job_id not in rq_queue.failed_job_registry.get_job_ids()
    finally:
        conn.close()
