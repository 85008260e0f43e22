"""TaskQueue: enqueue, enqueue_many, status, job, result, cancel, list, counts; on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from asyncsched.config import Settings
from asyncsched.exceptions import InvalidJob, JobNotFound, SerializationError
from asyncsched.queue import JobStatus, Retry, TaskQueue
from tests import jobs
from tests.rediskeys import all_keys, records
from tests.rqhelp import rq_payload

pytestmark = pytest.mark.cluster  # the queue on a Redis Cluster too (keys from queue.keys, not literals)


@pytest.fixture
async def queue(redis_url: str) -> TaskQueue:
    async with TaskQueue(redis_url, settings=Settings(redis_url=redis_url)) as q:
        yield q  # type: ignore[misc]


async def test_enqueue_writes_rq_job(queue: TaskQueue, redis: aioredis.Redis) -> None:
    job_id = await queue.enqueue(
        jobs.add, args=(2, 3), agent_name="mail", task_name="digest", meta={"k": 1}, description="d"
    )
    k = queue.keys
    assert await redis.lrange(k.queue("default"), 0, -1) == [job_id.encode()]
    assert await redis.smembers(k.queues) == {k.queue("default").encode()}
    h = await redis.hgetall(k.job(job_id))
    assert h[b"status"] == b"queued"
    assert h[b"origin"] == k.name("default").encode()
    assert h[b"timeout"] == b"180"
    assert h[b"asyncsched_agent"] == b"mail"
    assert h[b"asyncsched_task"] == b"digest"
    assert h[b"data"] == b'["tests.jobs.add", null, [2, 3], {}]'  # small: stored uncompressed (RQ reads it)
    assert await queue.status(job_id) == JobStatus.QUEUED
    rec = await queue.job(job_id)
    assert (rec.function, rec.args, rec.kwargs, rec.meta) == ("tests.jobs.add", [2, 3], {}, {"k": 1})
    assert rec.agent_name == "mail"
    assert rec.task_name == "digest"
    assert rec.description == "d"
    assert rec.enqueued_at is not None
    assert rec.attempt == 1
    record = (await records(redis, k))[-1]
    assert (record.kind, record.job_id, record.agent_name, record.task_name) == (
        "queued",
        job_id,
        "mail",
        "digest",
    )


async def test_function_path_string_and_spec_form(queue: TaskQueue) -> None:
    job_id = await queue.enqueue(
        func=jobs.add, function_path="tests.jobs:add", args=(1, 2), kwargs={}, agent_name="a"
    )
    rec = await queue.job(job_id)
    assert rec.function == "tests.jobs.add"
    assert rec.function_path == "tests.jobs:add"
    job_id = await queue.enqueue("tests.jobs:echo", kwargs={"x": 1}, queue="other")
    rec = await queue.job(job_id)
    assert (rec.function, rec.kwargs, rec.queue) == ("tests.jobs.echo", {"x": 1}, "other")


async def test_bad_input_writes_nothing(queue: TaskQueue, redis: aioredis.Redis) -> None:
    with pytest.raises(SerializationError, match="JSON"):
        await queue.enqueue(jobs.echo, args=(jobs.NotJSON(),))
    with pytest.raises(InvalidJob):
        await queue.enqueue(lambda: 1)
    with pytest.raises(InvalidJob):
        await queue.enqueue("not a path")
    with pytest.raises(InvalidJob):
        await queue.enqueue(jobs.add, job_id="bad:id")
    with pytest.raises(SerializationError):
        await queue.enqueue_many([{"func": jobs.add, "args": (1, 2)}, {"func": jobs.echo, "args": ({1, 2},)}])
    assert await all_keys(redis, "*rq:*") == set()


async def test_enqueue_many_one_round_trip(queue: TaskQueue, redis: aioredis.Redis) -> None:
    ids = await queue.enqueue_many([{"func": jobs.add, "args": (i, i)} for i in range(20)])
    assert len(set(ids)) == 20
    assert await redis.lrange(queue.keys.queue("default"), 0, -1) == [i.encode() for i in ids]
    assert await queue.enqueue_many([]) == []


async def test_unique(queue: TaskQueue, redis: aioredis.Redis) -> None:
    first = await queue.enqueue(jobs.add, args=(1, 1), job_id="sched-t1-100", unique=True)
    again = await queue.enqueue(jobs.add, args=(9, 9), job_id="sched-t1-100", unique=True)
    assert first == again == queue.keys.job_id("default", "sched-t1-100")
    assert await redis.llen(queue.keys.queue("default")) == 1
    assert (await queue.job(first)).args == [1, 1]
    with pytest.raises(InvalidJob):
        await queue.enqueue(jobs.add, unique=True)


async def test_delay_schedules(queue: TaskQueue, redis: aioredis.Redis) -> None:
    job_id = await queue.enqueue(jobs.add, args=(1, 2), delay=timedelta(hours=1))
    assert await queue.status(job_id) == JobStatus.SCHEDULED
    assert await redis.llen(queue.keys.queue("default")) == 0
    score = await redis.zscore(queue.keys.scheduled("default"), job_id)
    assert score is not None
    assert score > datetime.now(UTC).timestamp() + 3000
    h = await redis.hgetall(queue.keys.job(job_id))
    assert b"enqueued_at" not in h
    past = await queue.enqueue(jobs.add, args=(1, 2), at=datetime.now(UTC) - timedelta(seconds=5))
    assert await queue.status(past) == JobStatus.QUEUED


async def test_retry_fields(queue: TaskQueue, redis: aioredis.Redis) -> None:
    job_id = await queue.enqueue(jobs.add, args=(1, 2), retry=Retry(3, [1, 2, 3]))
    h = await redis.hgetall(queue.keys.job(job_id))
    assert (h[b"retries_left"], h[b"retry_intervals"]) == (b"3", b"[1, 2, 3]")
    job_id = await queue.enqueue(jobs.add, args=(1, 2), retry=2)
    assert (await queue.job(job_id)).retries_left == 2
    with pytest.raises(ValueError, match="at least 1"):
        Retry(0)


async def test_cancel_queued_and_scheduled(queue: TaskQueue, redis: aioredis.Redis) -> None:
    a = await queue.enqueue(jobs.add, args=(1, 2))
    b = await queue.enqueue(jobs.add, args=(1, 2), delay=3600)
    assert await queue.cancel(a) is True
    assert await queue.cancel(b) is True
    assert await queue.cancel(a) is False
    assert await queue.status(a) == JobStatus.CANCELLED
    k = queue.keys
    assert await redis.llen(k.queue("default")) == 0
    assert await redis.zcard(k.scheduled("default")) == 0
    assert set(await redis.zrange(k.canceled("default"), 0, -1)) == {a.encode(), b.encode()}
    with pytest.raises(JobNotFound):
        await queue.cancel("nope")
    counts = await queue.queue_counts()
    assert counts["default"]["cancelled"] == 2
    listed = await queue.list_jobs("default", JobStatus.CANCELLED)
    assert {r.id for r in listed} == {a, b}


async def test_not_found(queue: TaskQueue) -> None:
    with pytest.raises(JobNotFound):
        await queue.status("missing")
    with pytest.raises(JobNotFound):
        await queue.job("missing")
    with pytest.raises(JobNotFound):
        await queue.result("missing")


async def test_list_and_filter(queue: TaskQueue) -> None:
    a = await queue.enqueue(jobs.add, args=(1, 2), agent_name="x")
    b = await queue.enqueue(jobs.add, args=(1, 2), agent_name="y")
    c = await queue.enqueue(jobs.add, args=(1, 2), agent_name="x", task_name="t")
    assert len(await queue.list_jobs()) == 3
    assert [r.id for r in await queue.list_jobs(agent_name="x")] == [a, c]
    assert [r.id for r in await queue.list_jobs(agent_name="x", task_name="t")] == [c]
    assert [r.id for r in await queue.list_jobs(status=JobStatus.QUEUED, offset=1, limit=1)] == [b]


async def test_pickle_queue(redis_url: str, redis: aioredis.Redis) -> None:
    async with TaskQueue(redis_url, settings=Settings(redis_url=redis_url), serializer="pickle") as q:
        job_id = await q.enqueue(jobs.echo, args=({1, 2},))
        h = await redis.hgetall(q.keys.job(job_id))
        assert rq_payload(h[b"data"])[:1] == b"\x80"
        assert (await q.job(job_id)).args == [{1, 2}]
    async with TaskQueue(redis_url, settings=Settings(redis_url=redis_url)) as q:
        rec = await q.job(job_id)  # never unpickled without accept_pickle
        assert rec.args == []
        assert rec.serializer == "pickle"
        assert rec.function == "tests.jobs.echo"


def test_sync_facade(redis_url: str) -> None:
    from asyncsched.sync import TaskQueue as SyncTaskQueue

    with SyncTaskQueue(redis_url, settings=Settings(redis_url=redis_url)) as q:
        job_id = q.enqueue(
            func=jobs.add,
            agent_name="my-agent",
            task_name="my-task",
            function_path="tests.jobs:add",
            args=(1, 2),
            kwargs={},
        )
        assert q.status(job_id) == JobStatus.QUEUED
        assert q.job(job_id).agent_name == "my-agent"
        assert q.cancel(job_id)


async def test_concurrent_enqueues_are_coalesced(queue: TaskQueue, redis: aioredis.Redis) -> None:
    import asyncio

    ids = await asyncio.gather(*(queue.enqueue(jobs.add, args=(i, i)) for i in range(250)))
    assert len(set(ids)) == 250
    assert set(await redis.lrange(queue.keys.queue("default"), 0, -1)) == {i.encode() for i in ids}
    for i, job_id in enumerate(ids[:5]):
        assert (await queue.job(job_id)).args == [i, i]
    # a validation error belongs to its caller only; the others are written
    results = await asyncio.gather(
        queue.enqueue(jobs.add, args=(1, 1)),
        queue.enqueue(jobs.echo, args=(object(),)),
        queue.enqueue(jobs.add, args=(2, 2)),
        return_exceptions=True,
    )
    assert isinstance(results[1], SerializationError)
    assert await queue.status(results[0]) == JobStatus.QUEUED  # type: ignore[arg-type]
    assert await queue.status(results[2]) == JobStatus.QUEUED  # type: ignore[arg-type]


async def test_large_enqueue_many_is_split_in_order(queue: TaskQueue, redis: aioredis.Redis) -> None:
    ids = await queue.enqueue_many([{"func": jobs.add, "args": (i, i)} for i in range(2500)])
    assert await redis.lrange(queue.keys.queue("default"), 0, -1) == [i.encode() for i in ids]
    assert (await queue.job(ids[-1])).args == [2499, 2499]


async def test_mixed_batch_writes_each_job_as_a_single_enqueue_would(
    queue: TaskQueue, redis: aioredis.Redis
) -> None:
    # jobs with different options alternate inside one script call (each run of like jobs shares a header)
    await queue.enqueue(jobs.add, args=(0, 0), job_id="taken")
    specs: list[dict[str, object]] = [
        {"func": jobs.add, "args": (1, 1)},
        {"func": jobs.add, "args": (1, 2), "meta": {"m": 1}},
        {"func": jobs.add, "args": (1, 3), "delay": 3600},
        {"func": jobs.add, "args": (1, 4)},
        {"func": jobs.echo, "kwargs": {"x": 1}, "queue": "other", "agent_name": "a", "task_name": "t"},
        {
            "func": jobs.add,
            "args": (1, 5),
            "meta": {"m": 2},
            "delay": 3600,
            "ttl": 500,
            "retry": Retry(2, [3]),
        },
        {"func": jobs.add, "args": (9, 9), "job_id": "taken", "unique": True},
        {"func": jobs.add, "args": (1, 6), "job_id": "fresh", "unique": True, "at_front": True},
        {"func": jobs.add, "args": (1, 7), "result_ttl": 5, "failure_ttl": 6, "description": "mine"},
        {"func": jobs.add, "args": (1, 8)},
    ]
    batch = await queue.enqueue_many(specs)
    single = [await queue.enqueue(**{**spec, "queue": "single"}) for spec in specs[:6] + specs[8:]]  # type: ignore[arg-type]
    per_job = {b"created_at", b"enqueued_at", b"origin", b"asyncsched_run_at"}  # times of each enqueue
    k = queue.keys

    async def shape(job_id: str) -> dict[bytes, bytes]:
        h = await redis.hgetall(k.job(job_id))
        return {f: v for f, v in h.items() if f not in per_job}

    for mine, theirs in zip(batch[:6] + batch[8:], single, strict=True):
        assert await shape(mine) == await shape(theirs)
        assert set(await redis.hgetall(k.job(mine))) == set(await redis.hgetall(k.job(theirs)))
    taken, fresh = k.job_id("default", "taken"), k.job_id("default", "fresh")
    assert (await queue.job(taken)).args == [0, 0]  # unique: the existing job is kept
    assert await redis.lrange(k.queue("default"), 0, -1) == [
        fresh.encode(),
        taken.encode(),
        *(batch[i].encode() for i in (0, 1, 3, 8, 9)),
    ]
    assert await redis.lrange(k.queue("other"), 0, -1) == [batch[4].encode()]
    assert await redis.zrange(k.scheduled("default"), 0, -1) == sorted(batch[i].encode() for i in (2, 5))
    assert 400 < await redis.ttl(k.job(batch[5])) <= 500
    written = await records(redis, k, "default", "other")
    by_id = {r.job_id: r for r in written}
    assert by_id[batch[4]].agent_name == "a"
    assert by_id[batch[2]].kind == "scheduled"
    assert len([r for r in written if r.job_id == taken]) == 1  # the skipped duplicate left no record


async def test_unreachable_redis_is_backend_unavailable() -> None:
    from asyncsched.exceptions import BackendUnavailable
    from tests.servers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    async with TaskQueue(url, settings=Settings(redis_url=url)) as q:
        with pytest.raises(BackendUnavailable, match="Redis is unavailable"):
            await q.enqueue(jobs.add, args=(1, 2))
        with pytest.raises(BackendUnavailable):
            await q.status("x")


async def test_a_queue_on_the_callers_client_opens_no_connection_of_its_own(real_redis_url: str) -> None:
    # such a queue may be dropped without aclose() (the caller owns the client): nothing may leak
    from asyncsched._redis import create_redis

    admin = create_redis(real_redis_url)
    client = create_redis(real_redis_url)
    await client.ping()
    before = len(await admin.client_list())
    queue = TaskQueue(client, settings=Settings(redis_url=real_redis_url))
    for i in range(3):
        await queue.enqueue(jobs.add, args=(i, i))
    assert len(await admin.client_list()) == before
    del queue
    async with TaskQueue(real_redis_url, settings=Settings(redis_url=real_redis_url)) as own:
        await own.enqueue(jobs.add, args=(1, 1))  # a queue of its own client closes what it opened
    assert len(await admin.client_list()) == before
    await client.aclose()
    await admin.aclose()
