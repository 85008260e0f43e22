"""The claim script's ``overlap`` check against the previous run's job status, on every backend (on a Redis
Cluster the job hash is in its queue's slot and the script reads a copy in the scheduler's)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from asyncsched._redis import is_cluster
from asyncsched.rq.keys import RQKeys
from asyncsched.scheduler._index import Overlap, ScheduleIndex

pytestmark = pytest.mark.cluster


async def test_skip_judges_the_previous_runs_status(redis: aioredis.Redis) -> None:
    index = ScheduleIndex(redis, "rq")
    keys = RQKeys("rq", cluster=is_cluster(redis))
    skip = Overlap(policy="skip", queue="reports")
    first, second, third = (keys.job_id("reports", f"sched-t-{n}") for n in (1, 2, 3))
    assert await index.sync("t", "sig", 1000)
    claim = await index.claim("t", 1000, 2000, [1000], 99_000, "sig", job_ids=[first], overlap=skip)
    assert claim.decisions == ("run",)
    await index.done("t", 1000)  # enqueued: from now on its job hash says whether it still runs
    await redis.hset(keys.job(first), "status", "started")
    claim = await index.claim("t", 2000, 3000, [2000], 99_000, "sig", job_ids=[second], overlap=skip)
    assert claim.decisions == ("skip",)
    await redis.hset(keys.job(first), "status", "finished")
    claim = await index.claim("t", 3000, 4000, [3000], 99_000, "sig", job_ids=[third], overlap=skip)
    assert claim.decisions == ("run",)
