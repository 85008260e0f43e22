"""Each job's results stream (``rq:results:<id>``) keeps for its own job's ``result_ttl`` (a failure's
``failure_ttl``; RQ's default 500 s; ``-1`` for good), as RQ's ``EXPIRE`` of each stream gives, when one
finish call mixes jobs of different TTLs (the stream is written through a scratch stream and copied: a
TTL shared across the call's jobs would be wrong)."""

from __future__ import annotations

import redis.asyncio as aioredis

from asyncsched.config import Settings
from asyncsched.queue import TaskQueue
from asyncsched.testing import run_burst


async def test_each_results_stream_gets_its_own_jobs_ttl_when_one_batch_mixes_them(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    ttls: list[int | None] = [900, 900, 300, -1, 900, None, 60, 60]
    for n, ttl in enumerate(ttls):
        await queue.enqueue("tests.jobs.add", args=(n, 1), job_id=f"t{n}", result_ttl=ttl)
    await queue.enqueue("tests.jobs.fail", args=("x",), job_id="f0", failure_ttl=200)
    await run_burst(["default"], redis=redis_url, settings=wsettings)
    for n, ttl in enumerate(ttls):
        assert await redis.xlen(f"rq:results:t{n}") == 1
        left = await redis.ttl(f"rq:results:t{n}")
        if ttl == -1:
            assert left == -1, (n, left)  # kept for good
        else:
            want = 500 if ttl is None else ttl  # RQ's default result_ttl
            assert want - 5 < left <= want, (n, ttl, left)
    assert 195 < await redis.ttl("rq:results:f0") <= 200
    assert await redis.keys("rq:asyncsched:result-scratch:*") == []
