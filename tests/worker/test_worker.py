"""The worker on every backend: results, failures, retries, timeouts, bad jobs, cancel, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from asyncsched._redis import create_redis
from asyncsched.config import Settings
from asyncsched.exceptions import JobError
from asyncsched.queue import JobStatus, Retry, TaskQueue
from asyncsched.rq.slots import untagged
from asyncsched.testing import run_burst
from asyncsched.worker import Worker
from tests import jobs
from tests.rediskeys import all_keys, records
from tests.waiting import eventually

pytestmark = pytest.mark.cluster  # the worker on a Redis Cluster too (keys from queue.keys, not literals)


async def test_runs_sync_and_async_jobs(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    a = await queue.enqueue(jobs.add, args=(2, 3), agent_name="ag", task_name="tk")
    b = await queue.enqueue(jobs.async_add, args=(4, 5))
    c = await queue.enqueue(jobs.none)
    worker = await run_burst(redis=redis_url, settings=wsettings)
    assert worker.processed == 3
    assert await queue.result(a) == 5
    assert await queue.result(b) == 9
    assert await queue.result(c) is None
    rec = await queue.job(a)
    assert rec.status == JobStatus.SUCCESS
    assert rec.worker_name == worker.name
    assert rec.started_at is not None
    assert rec.ended_at is not None
    assert rec.started_at <= rec.ended_at
    k = queue.keys
    assert await redis.zcard(k.wip("default")) == 0
    assert await redis.zscore(k.finished("default"), a) is not None
    assert 400 < await redis.ttl(k.job(a)) <= 500
    written = await records(redis, k)
    assert [r.kind for r in written if r.job_id == a] == ["queued", "started", "success"]
    done = next(r for r in written if r.job_id == a and r.kind == "success")
    # (a record names the worker as it is named in its queue's scripts: on a cluster ``{q}<name>``)
    assert (done.agent_name, done.task_name, done.result) == ("ag", "tk", "5")
    assert untagged(done.worker) == worker.name
    assert done.started_at is not None
    assert done.ended_at is not None


async def test_failure_is_recorded_and_worker_goes_on(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    bad = await queue.enqueue(jobs.fail, args=("kaput",))
    abad = await queue.enqueue(jobs.async_fail)
    good = await queue.enqueue(jobs.add, args=(1, 1))
    await run_burst(redis=redis_url, settings=wsettings)
    rec = await queue.job(bad)
    assert rec.status == JobStatus.FAILED
    assert rec.error == "ValueError: kaput"
    assert rec.traceback is not None
    assert "Traceback" in rec.traceback
    assert "tests/jobs.py" in rec.traceback
    assert (await queue.job(abad)).error == "RuntimeError: boom"
    assert await queue.result(good) == 2
    with pytest.raises(JobError, match="kaput"):
        await queue.result(bad)
    assert await redis.zscore(queue.keys.failed("default"), bad) is not None
    workers = await queue.workers()
    assert workers == []  # deregistered at exit


async def test_bad_jobs_fail_with_a_clear_reason(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    missing = await queue.enqueue("tests.nowhere:func")
    noattr = await queue.enqueue("tests.jobs:nothing_here")
    malformed = await queue.enqueue(jobs.add, args=(1, 2))
    await redis.hset(queue.keys.job(malformed), "data", b"not zlib, not json")
    async with TaskQueue(redis_url, settings=wsettings, serializer="pickle") as pq:
        pickled = await pq.enqueue(jobs.add, args=(1, 2))
    nodata = await queue.enqueue(jobs.add, args=(1, 2))
    await redis.hdel(queue.keys.job(nodata), "data")
    after = await queue.enqueue(jobs.add, args=(3, 4))
    await run_burst(redis=redis_url, settings=wsettings)
    assert "No module named 'tests.nowhere'" in ((await queue.job(missing)).error or "")
    assert "has no attribute 'nothing_here'" in ((await queue.job(noattr)).error or "")
    assert "malformed job hash" in ((await queue.job(malformed)).error or "")
    assert "pickled" in ((await queue.job(pickled)).error or "")
    assert "no 'data'" in ((await queue.job(nodata)).error or "")
    assert await queue.result(after) == 7
    # the pickle was never unpickled: accepting it is an explicit choice
    await queue.requeue(pickled)
    await run_burst(redis=redis_url, settings=wsettings, accept_pickle=True)
    assert (await queue.job(pickled)).status == JobStatus.SUCCESS
    assert (await queue.job(pickled)).attempt == 2


async def test_unserializable_result_fails(queue: TaskQueue, redis_url: str, wsettings: Settings) -> None:
    job_id = await queue.enqueue("tests.jobs:NotJSON")
    await run_burst(redis=redis_url, settings=wsettings)
    rec = await queue.job(job_id)
    assert rec.status == JobStatus.FAILED
    assert "return value" in (rec.error or "")


async def test_retries_then_success(
    queue: TaskQueue, redis_url: str, wsettings: Settings, tmp_path: Path, redis: aioredis.Redis
) -> None:
    counter = str(tmp_path / "count")
    job_id = await queue.enqueue(jobs.fail_until, args=(counter, 3), retry=Retry(3))
    await run_burst(redis=redis_url, settings=wsettings)
    rec = await queue.job(job_id)
    assert rec.status == JobStatus.SUCCESS
    assert rec.result == 3
    assert rec.attempt == 3
    assert rec.retries_left == 1
    kinds = [r.kind for r in await records(redis, queue.keys) if r.job_id == job_id]
    assert kinds == ["queued", "started", "retry", "started", "retry", "started", "success"]


async def test_retry_interval_schedules_then_runs(
    queue: TaskQueue, redis_url: str, wsettings: Settings, tmp_path: Path, redis: aioredis.Redis
) -> None:
    counter = str(tmp_path / "count")
    job_id = await queue.enqueue(jobs.fail_until, args=(counter, 2), retry=Retry(1, [60]))
    failed_at = time.time()
    await run_burst(redis=redis_url, settings=wsettings)
    assert await queue.status(job_id) == JobStatus.SCHEDULED
    due = await redis.zscore(queue.keys.scheduled("default"), job_id)
    assert due is not None
    assert failed_at + 59 <= due <= time.time() + 61  # the retry's interval
    # (an interval the burst cannot outlast, however slow the host: the retry is made due here instead)
    await redis.zadd(queue.keys.scheduled("default"), {job_id: time.time()})
    # a long-running worker promotes the due retry itself: no separate scheduler process
    async with Worker(redis=redis_url, settings=wsettings, scheduler_interval=0.1) as worker:
        task = asyncio.create_task(worker.run())
        assert await queue.result(job_id, wait=20) == 2
        worker.request_stop()
        await task


async def test_delayed_job_becomes_due(queue: TaskQueue, redis_url: str, wsettings: Settings) -> None:
    job_id = await queue.enqueue(jobs.add, args=(1, 2), delay=0.5)
    assert await queue.status(job_id) == JobStatus.SCHEDULED
    async with Worker(redis=redis_url, settings=wsettings, scheduler_interval=0.1) as worker:
        task = asyncio.create_task(worker.run())
        assert await queue.result(job_id, wait=20) == 3
        worker.request_stop()
        await task


async def test_timeouts(queue: TaskQueue, redis_url: str, wsettings: Settings) -> None:
    a = await queue.enqueue(jobs.async_sleep, args=(30,), timeout=1)
    s = await queue.enqueue(jobs.sleep, args=(2,), timeout=1)
    await run_burst(redis=redis_url, settings=wsettings)
    for job_id in (a, s):
        rec = await queue.job(job_id)
        assert rec.status == JobStatus.FAILED
        assert (
            rec.error == "asyncsched.exceptions.JobTimeout: Task exceeded maximum timeout value (1 seconds)"
        )


async def test_cancel_running_async_job(
    queue: TaskQueue, redis_url: str, wsettings: Settings, tmp_path: Path, redis: aioredis.Redis
) -> None:
    flag = tmp_path / "running"
    async with Worker(redis=redis_url, settings=wsettings) as worker:
        task = asyncio.create_task(worker.run())
        job_id = await queue.enqueue(jobs.async_touch_and_sleep, args=(str(flag), 60))
        await eventually(flag.exists, what="the job to start")
        assert await queue.status(job_id) == JobStatus.RUNNING
        assert await queue.cancel(job_id) is True
        await eventually(lambda: not worker.running_jobs, what="the worker to drop the job")
        assert await queue.status(job_id) == JobStatus.CANCELLED
        assert await redis.zcard(queue.keys.wip("default")) == 0
        ok = await queue.enqueue(jobs.add, args=(1, 1))
        assert await queue.result(ok, wait=20) == 2
        worker.request_stop()
        await task


async def test_cancel_running_sync_job_discards_result(
    queue: TaskQueue, redis_url: str, wsettings: Settings, tmp_path: Path
) -> None:
    flag = tmp_path / "running"
    async with Worker(redis=redis_url, settings=wsettings) as worker:
        task = asyncio.create_task(worker.run())
        job_id = await queue.enqueue(jobs.touch_and_sleep, args=(str(flag), 1))
        await eventually(flag.exists, what="the job to start")
        assert await queue.cancel(job_id) is True
        await eventually(lambda: not worker.running_jobs, what="the worker to drop the job")
        worker.request_stop()
        await task
    assert await queue.status(job_id) == JobStatus.CANCELLED
    assert await queue.result(job_id) is None


async def test_graceful_shutdown_puts_back_unfinished(
    queue: TaskQueue, redis_url: str, wsettings: Settings, tmp_path: Path, redis: aioredis.Redis
) -> None:
    flag = tmp_path / "running"
    quick = tmp_path / "quick"
    async with Worker(redis=redis_url, settings=wsettings, grace_period=0.5) as worker:
        task = asyncio.create_task(worker.run())
        long_id = await queue.enqueue(jobs.async_touch_and_sleep, args=(str(flag), 60))
        short_id = await queue.enqueue(jobs.async_touch_and_sleep, args=(str(quick), 0.1))
        await eventually(lambda: flag.exists() and quick.exists(), what="both jobs to start")
        worker.request_stop()
        await task
    assert await queue.status(short_id) == JobStatus.SUCCESS
    rec = await queue.job(long_id)
    assert rec.status == JobStatus.QUEUED
    assert rec.attempt == 2
    k = queue.keys
    assert await redis.lrange(k.queue("default"), 0, -1) == [long_id.encode()]
    assert await redis.zcard(k.wip("default")) == 0
    assert not await redis.sismember(k.workers, k.worker(worker.name))


async def test_enqueue_from_a_sync_task(queue: TaskQueue, redis_url: str, wsettings: Settings) -> None:
    parent = await queue.enqueue(jobs.enqueue_from_thread, args=(redis_url,))
    await run_burst(redis=redis_url, settings=wsettings)
    child = await queue.result(parent)
    rec = await queue.job(child)
    assert rec.agent_name == "child"
    assert rec.status == JobStatus.SUCCESS  # the burst worker picked up the child too


async def test_registration_and_concurrency(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    ids = await queue.enqueue_many([{"func": jobs.async_sleep, "args": (0.2,)} for _ in range(20)])
    async with Worker(redis=redis_url, settings=wsettings, concurrency=20, name="w-one") as worker:
        info = await queue.workers()
        assert [w.name for w in info] == ["w-one"]
        assert info[0].queues == ["default"]
        task = asyncio.create_task(worker.run())
        for job_id in ids:
            assert await queue.result(job_id, wait=20) == 0.2
        info = await queue.workers()
        assert info[0].successful_job_count == 20
        worker.request_stop()
        await task
    h = await redis.hgetall(queue.keys.worker("w-one"))
    assert b"death" in h


async def test_a_slot_frees_when_a_job_returns_and_unrecorded_outcomes_are_bounded(
    queue: TaskQueue, redis_url: str, wsettings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await queue.enqueue_many([{"func": jobs.async_add, "args": (i, i)} for i in range(3)])
    worker = Worker(redis=redis_url, settings=wsettings, concurrency=1)
    recording = asyncio.Event()
    release = asyncio.Event()
    original = worker.completer.record

    async def held(outcomes: list[object], batch: object) -> None:
        recording.set()
        await release.wait()  # Redis is slow to take the outcomes
        await original(outcomes, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(worker.completer, "record", held)
    async with worker:
        runner = asyncio.create_task(worker.run())
        await asyncio.wait_for(recording.wait(), 10)
        # the first job's outcome is not recorded, yet the second job ran in the slot it freed ...
        await eventually(lambda: _ran(worker, 2), what="the second job to run")
        # ... and no third: one slot of concurrency means at most one outcome waiting beside it
        assert await queue.status(ids[2]) == JobStatus.QUEUED
        assert worker.running.capacity() == 0
        release.set()
        for i, job_id in enumerate(ids):
            assert await queue.result(job_id, wait=10) == 2 * i
        worker.request_stop()
        await runner
    assert worker.processed == 3


async def _ran(worker: Worker, count: int) -> bool:
    return worker.running.executing == 0 and len(worker.running.jobs) == count


async def test_worker_ignores_data_of_other_queue(
    queue: TaskQueue, redis_url: str, wsettings: Settings
) -> None:
    mine = await queue.enqueue(jobs.add, args=(1, 2), queue="high")
    other = await queue.enqueue(jobs.add, args=(1, 2), queue="low")
    await run_burst(["high"], redis=redis_url, settings=wsettings)
    assert await queue.status(mine) == JobStatus.SUCCESS
    assert await queue.status(other) == JobStatus.QUEUED


def test_zlib_header_of_results_is_rq_style() -> None:
    from asyncsched.rq.codec import decode_exc, encode_exc

    assert zlib.decompress(__import__("base64").b64decode(encode_exc("x"))) == b"x"
    assert decode_exc(encode_exc("tb")) == "tb"


async def test_reaper_puts_back_jobs_stuck_in_the_intermediate_list(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    job_id = await queue.enqueue(jobs.add, args=(1, 2))
    # a worker died between its BLMOVE and its claim: the id sits in the intermediate list
    k = queue.keys
    await redis.lmove(k.queue("default"), k.intermediate("default"), "LEFT", "RIGHT")
    async with Worker(redis=redis_url, settings=wsettings) as worker:
        assert await worker.reap() == []  # first seen now
        first_seen = k.first_seen("default", job_id)
        await redis.set(first_seen, int(__import__("time").time()) - 120)  # ... two minutes ago
        assert await worker.reap() == [(job_id, "unstuck")]
    assert await redis.lrange(k.queue("default"), 0, -1) == [job_id.encode()]
    await run_burst(redis=redis_url, settings=wsettings)
    assert await queue.result(job_id) == 3


async def test_key_prefix_is_a_setting(redis_url: str, redis: aioredis.Redis) -> None:
    settings = Settings(redis_url=redis_url, key_prefix="myapp")
    async with TaskQueue(redis_url, settings=settings) as q:
        job_id = await q.enqueue(jobs.add, args=(1, 2), delay=0.0)
        later = await q.enqueue(jobs.add, args=(2, 2), delay=3600)
        await run_burst(redis=redis_url, settings=settings)
        assert await q.result(job_id) == 3
        assert await q.status(later) == JobStatus.SCHEDULED
    keys = await all_keys(redis)
    assert keys
    # (on a cluster the keys of one component's slot start with its tag: {myapp:asyncsched:...})
    assert all(k.startswith(("myapp:", "{myapp:")) for k in keys), keys


async def test_result_waits_for_the_current_attempt(
    queue: TaskQueue, redis_url: str, wsettings: Settings, tmp_path: Path
) -> None:
    counter = str(tmp_path / "n")
    job_id = await queue.enqueue(jobs.fail_until, args=(counter, 2))
    await run_burst(redis=redis_url, settings=wsettings)
    with pytest.raises(JobError):
        await queue.result(job_id)
    await queue.requeue(job_id)
    assert await queue.result(job_id) is None  # the old failure is not this attempt's outcome
    async with Worker(redis=redis_url, settings=wsettings) as worker:
        task = asyncio.create_task(worker.run())
        assert await queue.result(job_id, wait=20) == 2
        worker.request_stop()
        await task


async def test_multi_queue_worker_blocks_and_reports(
    queue: TaskQueue, redis_url: str, wsettings: Settings, tmp_path: Path
) -> None:
    flag = tmp_path / "running"
    async with Worker(["high", "low"], redis=redis_url, settings=wsettings, name="mq") as worker:
        task = asyncio.create_task(worker.run())
        low = await queue.enqueue(jobs.add, args=(1, 1), queue="low")
        assert await queue.result(low, wait=20) == 2  # woken by the push, no polling
        slow = await queue.enqueue(jobs.async_touch_and_sleep, args=(str(flag), 60), queue="high")
        await eventually(flag.exists, what="the job to start")
        info = await queue.workers()
        assert info[0].current_jobs == [slow]
        assert info[0].state == "busy"
        counts = await queue.queue_counts()
        assert counts["high"]["running"] == 1
        assert counts["low"]["success"] == 1
        assert [r.id for r in await queue.list_jobs("high", JobStatus.RUNNING)] == [slow]
        await queue.cancel(slow)
        await eventually(lambda: not worker.running_jobs, what="the cancelled job to stop")
        worker.request_stop()
        await task


async def test_scheduler_lock_of_another_holder_is_respected(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    job_id = await queue.enqueue(jobs.add, args=(1, 2), at=datetime.now(UTC) + timedelta(seconds=1))
    k = queue.keys
    await redis.zadd(k.scheduled("default"), {job_id: 1})  # due long ago
    await redis.set(k.scheduler_lock("default"), "rq-scheduler-elsewhere", ex=60)
    await run_burst(redis=redis_url, settings=wsettings)
    assert await queue.status(job_id) == JobStatus.SCHEDULED  # RQ's scheduler owns this queue
    await redis.delete(k.scheduler_lock("default"))
    await run_burst(redis=redis_url, settings=wsettings)
    assert await queue.result(job_id) == 3
    assert await redis.get(k.scheduler_lock("default")) is None  # released at exit


async def test_malformed_hash_in_queue_is_failed_not_dropped(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    k = queue.keys
    garbage, missing = k.job_id("default", "garbage-1"), k.job_id("default", "missing-2")
    await redis.hset(k.job(garbage), mapping={"origin": k.name("default"), "whatever": "x"})
    await redis.rpush(k.queue("default"), garbage, missing)
    ok = await queue.enqueue(jobs.add, args=(1, 1))
    await run_burst(redis=redis_url, settings=wsettings)
    rec = await queue.job(garbage)
    assert rec.status == JobStatus.FAILED
    assert "no 'data'" in (rec.error or "")
    assert await queue.result(ok) == 2
    assert await redis.llen(k.queue("default")) == 0


async def test_a_rejected_outcome_does_not_stall_the_worker(
    queue: TaskQueue, redis_url: str, wsettings: Settings, redis: aioredis.Redis
) -> None:
    ids = await queue.enqueue_many([{"func": jobs.add, "args": (i, i)} for i in range(5)])
    await redis.set(queue.keys.results(ids[2]), "not a stream")  # XADD will fail with WRONGTYPE
    worker = await run_burst(redis=redis_url, settings=wsettings)
    assert worker.processed == 5
    for i in (0, 1, 3, 4):
        assert await queue.result(ids[i]) == 2 * i
    assert await redis.type(queue.keys.results(ids[2])) == b"string"  # its XADD really was refused


# ---------------------------------------------------------------- the pipelined BLMOVE + claim (real Redis)
# Single node only: the single-queue worker's claiming list and commandstats of one server (on a cluster the
# claiming lists are per queue: tests/worker/test_cluster.py::test_ids_left_in_a_claiming_list_...).
@pytest.mark.parametrize(
    "epoch",
    [0, 951782400, 1709164799.999999, 1735689599.5, 1767225600.000001, 4102444800, 1764201234.123456],
)
async def test_claim_script_formats_redis_time_as_rq_does(real_redis_url: str, epoch: float) -> None:
    from asyncsched.rq._scripts import source
    from asyncsched.rq.codec import fmt_ts

    text = source("claim")
    body = text[text.index("local function rq_ts") : text.index("-- A claim pipelined")]
    client = create_redis(real_redis_url)
    sec, usec = int(epoch), round((epoch - int(epoch)) * 1e6)
    got = await client.eval(body + "return rq_ts(tonumber(ARGV[1]), tonumber(ARGV[2]))", 0, sec, usec)
    await client.aclose()
    want = fmt_ts(datetime.fromtimestamp(sec, UTC).replace(microsecond=usec))
    assert got.decode() == want


async def test_idle_worker_claims_in_the_round_trip_that_delivers_the_job(
    real_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(redis_url=real_redis_url)
    admin = create_redis(real_redis_url)
    async with (
        TaskQueue(real_redis_url, settings=settings) as q,
        Worker(redis=real_redis_url, settings=settings, poll_timeout=1) as worker,
    ):
        runner = asyncio.create_task(worker.run())
        await eventually(lambda: _blocked_clients(admin), what="the worker to block on its queue")
        await admin.config_resetstat()
        before = datetime.now(UTC)
        job_id = await q.enqueue(jobs.add, args=(1, 2))
        assert await q.result(job_id, wait=10) == 3
        rec = await q.job(job_id)
        assert rec.started_at is not None
        assert before - timedelta(seconds=1) <= rec.started_at <= datetime.now(UTC)  # Redis' clock
        assert await admin.llen(f"rq:asyncsched:claiming:{worker.name}") == 0
        assert await admin.llen("rq:queue:default:intermediate") == 0
        assert await admin.hget("rq:asyncsched:claiming", worker.name) == b"default"
        blmove = (await admin.info("commandstats"))["cmdstat_blmove"]
        assert blmove["calls"] >= 1
        assert blmove["rejected_calls"] == blmove["failed_calls"] == 0, blmove
        # the script cache emptied while the worker waits (a restart, SCRIPT FLUSH): the NOSCRIPT reply of
        # the claim pipelined behind its BLMOVE is settled at once (loaded, claimed again), not an error
        await eventually(lambda: _blocked_clients(admin), what="the worker to block again")
        await admin.script_flush()
        assert await q.result(await q.enqueue(jobs.add, args=(2, 3)), wait=10) == 5
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        worker.request_stop()
        await runner
    assert await admin.hget("rq:asyncsched:claiming", worker.name) is None  # unregistered at exit
    await admin.aclose()


async def _blocked_clients(admin: aioredis.Redis) -> bool:
    info = await admin.info("clients")
    return int(info["blocked_clients"]) > 0


async def test_reaper_returns_a_dead_workers_claiming_list(real_redis_url: str) -> None:
    settings = Settings(redis_url=real_redis_url)
    admin = create_redis(real_redis_url)
    async with TaskQueue(real_redis_url, settings=settings) as q:
        first = await q.enqueue(jobs.add, args=(1, 1))
        second = await q.enqueue(jobs.add, args=(2, 2))
        # a worker was killed between its BLMOVE and the claim behind it; its key has expired since
        await admin.hset("rq:asyncsched:claiming", "gone", "default")
        await admin.lmove("rq:queue:default", "rq:asyncsched:claiming:gone", "LEFT", "RIGHT")
        async with Worker(redis=real_redis_url, settings=settings) as reaper:
            assert await reaper.reap() == [(first, "unclaimed")]
        assert await admin.lrange("rq:queue:default", 0, -1) == [first.encode(), second.encode()]
        assert await admin.hget("rq:asyncsched:claiming", "gone") is None
        await run_burst(redis=real_redis_url, settings=settings)
        assert (await q.result(first), await q.result(second)) == (2, 4)
    await admin.aclose()


async def test_a_live_workers_claiming_list_is_left_alone(real_redis_url: str) -> None:
    settings = Settings(redis_url=real_redis_url)
    admin = create_redis(real_redis_url)
    async with TaskQueue(real_redis_url, settings=settings) as q:
        await q.enqueue(jobs.add, args=(1, 1))
        async with (
            Worker(redis=real_redis_url, settings=settings) as alive,
            Worker(redis=real_redis_url, settings=settings) as reaper,
        ):
            await admin.lmove("rq:queue:default", f"rq:asyncsched:claiming:{alive.name}", "LEFT", "RIGHT")
            assert await reaper.reap() == []
            assert await admin.llen(f"rq:asyncsched:claiming:{alive.name}") == 1
        # ... until it stops: its own leftovers go back to the queue
        assert await admin.llen("rq:queue:default") == 1
    await admin.aclose()


async def test_cancelled_while_claiming_puts_the_claimed_jobs_back(
    real_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: the job is enqueued only once the worker's BLMOVE + claim pipeline is on the wire
    (so it is delivered by that pipeline, never by the non-blocking claim before it), and the replies are
    held back exactly once, until the worker has been cancelled."""
    settings = Settings(redis_url=real_redis_url)
    async with TaskQueue(real_redis_url, settings=settings) as q:
        # a long BLMOVE: the job enqueued below reaches it however slow the machine is
        worker = Worker(redis=real_redis_url, settings=settings, orphan_policy="fail", poll_timeout=60)
        blocking = asyncio.Event()  # the pipeline is sent; its replies are not read yet
        release = asyncio.Event()
        line = worker.claimer.line
        assert line is not None
        original = line._read
        held = False

        async def slow_reply(conn: object) -> None:
            nonlocal held
            if not held and line._unread == 2 and not line._replies:  # the BLMOVE + claim pipeline
                held = True
                blocking.set()
                await release.wait()  # its replies are still on their way when the worker is cancelled
            await original(conn)

        monkeypatch.setattr(line, "_read", slow_reply)
        async with worker:
            runner = asyncio.create_task(worker.run())
            try:
                await asyncio.wait_for(blocking.wait(), 30)
                job_id = await q.enqueue(jobs.add, args=(5, 5))

                async def claimed() -> bool:
                    return await q.status(job_id) == JobStatus.RUNNING  # Redis has started the job

                await eventually(claimed, timeout=30, what="the claim script to start the job")
                runner.cancel()  # cancelled first: the held read raises CancelledError, then collects
                await asyncio.sleep(0)
                release.set()
                with pytest.raises(asyncio.CancelledError):
                    await runner
            finally:
                release.set()  # never leave the worker waiting, whatever failed above
                if not runner.done():
                    runner.cancel()
                    with contextlib.suppress(BaseException):
                        await asyncio.wait_for(runner, 30)
        rec = await q.job(job_id)
        # the job was taken, not lost: it ran or went back to the queue; it never waits for the reaper
        assert rec.status in (JobStatus.SUCCESS, JobStatus.QUEUED), rec.status
        assert await q.list_jobs(status=JobStatus.RUNNING) == []


def test_a_recorded_outcome_does_not_release_the_next_execution_of_the_same_job() -> None:
    # A job retried at once is back on its queue when its failed attempt is recorded, and may be claimed
    # again before the completer marks that attempt recorded. The next attempt must stay held: a burst
    # worker that thought itself idle exited with it still running (status left 'started').
    from types import SimpleNamespace

    from asyncsched.worker._running import Running

    async def scenario() -> None:
        running = Running(concurrency=10, threads=2)
        first = SimpleNamespace(id="j1", is_async=True)
        again = SimpleNamespace(id="j1", is_async=True)
        task = asyncio.ensure_future(asyncio.sleep(0))
        running.started(first, task)  # type: ignore[arg-type]
        running.returned(first, SimpleNamespace(job=first, kind="failed"))  # type: ignore[arg-type]
        outcome = running.done.get_nowait()
        running.started(again, task)  # type: ignore[arg-type]  # claimed again meanwhile
        running.recorded([outcome])  # type: ignore[list-item]
        assert not running.idle()
        assert running.jobs["j1"][0] is again
        await task

    asyncio.run(scenario())
