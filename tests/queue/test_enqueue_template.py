"""``enqueue.lua`` writes a run of 8 or more like jobs from one template hash (COPY, then each job's own
fields): every job hash must be what the one-job path writes, on every backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from asyncsched.config import Settings
from asyncsched.queue import Retry, TaskQueue, _cluster, _enqueue
from asyncsched.rq.keys import enqueue_template
from tests import jobs
from tests.rediskeys import all_keys, records

pytestmark = pytest.mark.cluster

RUN = 10  # jobs of one segment: above enqueue.lua's TEMPLATE (8)
PER_JOB = {b"created_at", b"enqueued_at", b"origin"}  # the time of each enqueue; the queue's name


@pytest.fixture
async def queue(redis_url: str) -> TaskQueue:
    async with TaskQueue(redis_url, settings=Settings(redis_url=redis_url)) as q:
        yield q  # type: ignore[misc]


async def _shape(redis: aioredis.Redis, key: str) -> dict[bytes, bytes]:
    return {f: v for f, v in (await redis.hgetall(key)).items() if f not in PER_JOB}


async def test_a_run_of_like_jobs_gets_the_hash_a_one_job_call_writes(
    queue: TaskQueue, redis: aioredis.Redis
) -> None:
    opts = {"func": jobs.add, "meta": {"m": 1}, "ttl": 500, "retry": Retry(2, [3]), "agent_name": "a"}
    batch = await queue.enqueue_many([{**opts, "args": (i, i), "at_front": True} for i in range(RUN)])
    single = await queue.enqueue(**{**opts, "args": (0, 0), "at_front": True, "queue": "single"})  # type: ignore[arg-type]
    k = queue.keys
    assert await _shape(redis, k.job(batch[0])) == await _shape(redis, k.job(single))
    full = set(await redis.hgetall(k.job(single)))
    for i, job_id in enumerate(batch):
        h = await redis.hgetall(k.job(job_id))
        assert set(h) == full
        assert h[b"description"] == f"tests.jobs.add({i}, {i})".encode()
        assert h[b"created_at"] == h[b"enqueued_at"] != b""
        assert (await queue.job(job_id)).args == [i, i]
        assert 400 < await redis.ttl(k.job(job_id)) <= 500
    # at_front: the run is pushed by one LPUSH, as before (the last job first)
    assert await redis.lrange(k.queue("default"), 0, -1) == [j.encode() for j in reversed(batch)]
    written = [r.job_id for r in await records(redis, k, "default") if r.kind == "queued"]
    assert [j for j in written if j != single] == batch
    assert await all_keys(redis, "*enqueue-template*") == set()  # gone before the call returned


async def test_a_run_replacing_jobs_leaves_none_of_their_old_fields(
    queue: TaskQueue, redis: aioredis.Redis
) -> None:
    k = queue.keys
    ids = [f"r{i}" for i in range(RUN)]
    for job_id in ids:
        await redis.hset(k.job(k.job_id("default", job_id)), mapping={"stale": "1", "status": "failed"})
    batch = await queue.enqueue_many(
        [{"func": jobs.add, "args": (i, i), "job_id": j} for i, j in enumerate(ids)]
    )
    for job_id in batch:
        h = await redis.hgetall(k.job(job_id))
        assert b"stale" not in h
        assert h[b"status"] == b"queued"


@pytest.fixture
def fixed_ids(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(RUN)]
    it: Iterator[str] = iter(ids)
    for module in (_enqueue, _cluster):
        monkeypatch.setattr(module, "uuid4_text", lambda: next(it))
    return ids


async def test_a_generated_id_whose_hash_exists_is_merged_as_before(
    queue: TaskQueue, redis: aioredis.Redis, fixed_ids: list[str]
) -> None:
    # a generated id cannot exist; if it did, the job's fields are written over the hash (HSET), as the
    # one-job path does, rather than the COPY failing or replacing it
    k = queue.keys
    taken = k.job(k.job_id("default", fixed_ids[0]))
    await redis.hset(taken, "foreign", "x")
    batch = await queue.enqueue_many([{"func": jobs.add, "args": (i, i)} for i in range(RUN)])
    assert k.job(batch[0]) == taken
    merged, other = await redis.hgetall(taken), await redis.hgetall(k.job(batch[1]))
    assert merged[b"foreign"] == b"x"
    assert set(merged) == set(other) | {b"foreign"}
    assert (await queue.job(batch[0])).args == [0, 0]


async def test_a_foreign_key_at_the_templates_name_is_replaced(
    queue: TaskQueue, redis: aioredis.Redis
) -> None:
    template = enqueue_template(queue.prefix, queue.keys.name("default"))
    await redis.set(template, "foreign")
    batch = await queue.enqueue_many([{"func": jobs.add, "args": (i, i)} for i in range(RUN)])
    assert [(await queue.job(j)).args for j in batch] == [[i, i] for i in range(RUN)]
    assert not await redis.exists(template)
