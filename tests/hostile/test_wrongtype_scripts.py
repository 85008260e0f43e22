"""Keys of the wrong type where the maintenance scripts walk ids (issue 13, gap 4); a real redis-server.

A foreign writer's ``SET rq:job:x str`` sitting in RQ's intermediate list or a started registry, a dead
worker's claiming list pointing at a queue key that is a string, a registry or the rate-limit set of another
type: each bad id or key is skipped and reported (logged once per pass), what is good next to it is still
recovered, and the script never fails whole (it used to fail every reap, so orphans were never recovered).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from asyncsched._redis import create_redis
from asyncsched.config import Settings
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.rq._calls import HeartbeatCall, ReleaseLocksCall
from asyncsched.rq._scripts import Scripts
from asyncsched.rq.keys import RQKeys
from asyncsched.scheduler._rqscheduler import RQSchedulerBridge
from asyncsched.testing import run_burst
from asyncsched.worker import Worker
from tests import jobs


@pytest.fixture
async def admin(real_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = create_redis(real_redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(real_redis_url: str) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(real_redis_url, settings=Settings(redis_url=real_redis_url)) as q:
        yield q


def _reaper(url: str, queues: list[str] | None = None) -> Worker:
    return Worker(queues or ["default"], redis=url, settings=Settings(redis_url=url), name="reaper")


def _skips(out: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(job_id, action) for job_id, action in out if action.startswith(("skipped", "quarantined"))]


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


async def _lapse(admin: aioredis.Redis, member: str, queue: str = "default") -> None:
    await admin.zadd(f"rq:wip:{queue}", {member: int(time.time()) - 1})


async def test_wrong_type_job_in_the_intermediate_list(
    real_redis_url: str, admin: aioredis.Redis, queue: TaskQueue, caplog: pytest.LogCaptureFixture
) -> None:
    good = await queue.enqueue(jobs.add, args=(1, 2))
    await admin.lmove("rq:queue:default", "rq:queue:default:intermediate", "LEFT", "RIGHT")
    await admin.set("rq:job:x", "str")
    await admin.rpush("rq:queue:default:intermediate", "x")
    await admin.set(f"rq:queue:default:intermediate:first_seen:{good}", "not a number")  # garbage: reset
    async with _reaper(real_redis_url) as reaper:
        out = await reaper.reap()
        assert _skips(out) == [("x", "skipped: WRONGTYPE key rq:job:x holds a string, not a hash")]
        assert await admin.lrange("rq:queue:default:intermediate", 0, -1) == [good.encode()]
        await admin.set(f"rq:queue:default:intermediate:first_seen:{good}", int(time.time()) - 120)
        assert await reaper.reap() == [(good, "unstuck")]  # the bad id is gone: reported once
    assert _logged(caplog, "rq:job:x holds a string") == 1
    await run_burst(redis=real_redis_url, settings=Settings(redis_url=real_redis_url))
    assert await queue.result(good) == 3


async def test_wrong_type_keys_in_the_started_registry(
    real_redis_url: str, admin: aioredis.Redis, queue: TaskQueue, caplog: pytest.LogCaptureFixture
) -> None:
    good = await queue.enqueue(jobs.add, args=(1, 2))
    other = await queue.enqueue(jobs.add, args=(2, 2))
    for job_id in (good, other):
        await admin.hset(f"rq:job:{job_id}", mapping={"status": "started", "worker_name": "gone"})
        await _lapse(admin, f"{job_id}:ex1")
    await admin.lrem("rq:queue:default", 0, good)
    await admin.lrem("rq:queue:default", 0, other)
    await admin.set("rq:job:x", "str")  # a job hash that is a string
    await _lapse(admin, "x:ex1")
    await admin.set(f"rq:executions:{other}", "str")  # its executions zset is a string
    await admin.set("rq:worker:gone:executions", "str")
    await admin.set("rq:failed:default", "str")  # the failed registry too
    async with _reaper(real_redis_url) as reaper:
        out = await reaper.reap()
    assert (good, "failed") in out
    assert (other, "failed") in out
    assert ("x", "skipped: WRONGTYPE key rq:job:x holds a string, not a hash") in out
    assert (good, "skipped: WRONGTYPE key rq:failed:default holds a string, not a zset") in out
    assert await queue.status(good) == JobStatus.FAILED
    assert await admin.zcard("rq:wip:default") == 0
    assert _logged(caplog, "rq:job:x holds a string") == 1


async def test_requeue_into_a_wrong_type_queue_fails_the_job_instead(
    real_redis_url: str, admin: aioredis.Redis, queue: TaskQueue
) -> None:
    job_id = await queue.enqueue(jobs.add, args=(1, 2), retry=3)
    await admin.lrem("rq:queue:default", 0, job_id)
    await admin.hset(f"rq:job:{job_id}", "status", "started")
    await _lapse(admin, f"{job_id}:ex1")
    await admin.set("rq:queue:default", "str")
    async with _reaper(real_redis_url) as reaper:
        assert await reaper.reap() == [(job_id, "failed")]
    assert await queue.status(job_id) == JobStatus.FAILED


async def test_dead_workers_claiming_list_into_a_wrong_type_queue_is_quarantined(
    real_redis_url: str, admin: aioredis.Redis, queue: TaskQueue, caplog: pytest.LogCaptureFixture
) -> None:
    first = await queue.enqueue(jobs.add, args=(1, 1))
    await admin.hset("rq:asyncsched:claiming", mapping={"gone": "default", "gone2": "other"})
    await admin.lmove("rq:queue:default", "rq:asyncsched:claiming:gone", "LEFT", "RIGHT")
    await admin.set("rq:queue:default", "str")  # its queue key became a string meanwhile
    await admin.set("rq:asyncsched:claiming:gone2", "str")  # a claiming list that is a string
    async with _reaper(real_redis_url, ["other"]) as reaper:
        out = await reaper.reap()
    why = "WRONGTYPE key rq:queue:default holds a string, not a list"
    assert (first, f"quarantined: {why}") in out
    assert ("", "skipped: WRONGTYPE key rq:asyncsched:claiming:gone2 holds a string, not a list") in out
    assert await admin.lrange("rq:asyncsched:quarantine:default", 0, -1) == [first.encode()]
    assert await admin.hgetall("rq:asyncsched:claiming") == {}
    assert _logged(caplog, why) == 1


async def test_registries_of_the_wrong_type_never_fail_the_reap(
    real_redis_url: str, admin: aioredis.Redis, queue: TaskQueue
) -> None:
    good = await queue.enqueue(jobs.add, args=(1, 2), queue="ok")
    await admin.lrem("rq:queue:ok", 0, good)
    await admin.hset(f"rq:job:{good}", "status", "started")
    await _lapse(admin, f"{good}:ex1", "ok")
    for key in ("rq:wip:broken", "rq:queue:broken:intermediate", "rq:asyncsched:claiming", "rq:rl-keys"):
        await admin.set(key, "str")
    async with _reaper(real_redis_url, ["broken", "ok"]) as reaper:
        out = await reaper.reap()
    assert (good, "failed") in out
    skipped = {action for job_id, action in _skips(out)}
    for key in ("rq:wip:broken", "rq:queue:broken:intermediate", "rq:asyncsched:claiming", "rq:rl-keys"):
        assert any(key in action for action in skipped), (key, skipped)


async def test_rate_limit_members_of_the_wrong_type(
    real_redis_url: str, admin: aioredis.Redis, queue: TaskQueue
) -> None:
    await admin.sadd("rq:rl-keys", "k")
    await admin.hset("rq:rl:k", "concurrency", 1)
    await admin.zadd("rq:rl:k:allowed", {"x": 1})
    await admin.set("rq:job:x", "str")
    await admin.set("rq:executions:x", "str")
    await admin.zadd("rq:rl:k:rate_limited", {"y": 1})
    await admin.set("rq:job:y", "str")
    async with _reaper(real_redis_url) as reaper:
        out = await reaper.reap()
    assert [a for i, a in out if i == "" and a.startswith("skipped: rate limit k: WRONGTYPE")], out
    assert await admin.zcard("rq:rl:k:allowed") == 0  # the garbage id's slot is freed


# -- the other scripts that walk ids --------------------------------------------------------------------


async def test_promote_skips_wrong_type_keys_and_promotes_the_rest(
    real_redis_url: str, admin: aioredis.Redis, queue: TaskQueue, caplog: pytest.LogCaptureFixture
) -> None:
    good = await queue.enqueue(jobs.add, args=(1, 2), delay=timedelta(seconds=1), queue="a")
    other = await queue.enqueue(jobs.add, args=(1, 2), delay=timedelta(seconds=1), queue="b")
    await admin.zadd("rq:scheduled:a", {good: 1, "x": 1})
    await admin.zadd("rq:scheduled:b", {other: 1})
    await admin.set("rq:job:x", "str")
    await admin.sadd("rq:scheduler-lock:b", "not a string")  # queue b's lock is a set
    async with _reaper(real_redis_url, ["a", "b"]) as worker:
        assert await worker.promoter.promote_once() == 1
        assert await worker.promoter.promote_once() == 0
    assert await admin.lrange("rq:queue:a", 0, -1) == [good.encode()]
    assert await admin.zrange("rq:scheduled:a", 0, -1) == []
    assert await admin.zrange("rq:scheduled:b", 0, -1) == [other.encode()]  # left for when it is fixed
    assert _logged(caplog, "rq:job:x holds a string, not a hash") == 1
    assert _logged(caplog, "rq:scheduler-lock:b holds a set, not a string") == 1  # once, not per pass


async def test_heartbeat_renews_the_good_jobs_next_to_a_wrong_type_one(
    real_redis_url: str, admin: aioredis.Redis
) -> None:
    scripts = Scripts(admin)
    await admin.hset("rq:job:good", mapping={"status": "started", "worker_name": "w"})
    await admin.set("rq:job:x", "str")
    await admin.set("rq:executions:good", "str")  # its executions zset is a string: skipped
    now = int(time.time())
    running = [("x", "e1", "default"), ("good", "e2", "default")]
    reply = await scripts.call(HeartbeatCall(RQKeys("rq"), "w", now, "ts", str(now), 30, 60, running))
    assert reply[1:] == [b"x"]  # "not started by this worker any more": the worker stops it
    assert await admin.zscore("rq:wip:default", "good:e2") == now + 30


async def test_delete_failed_and_release_locks_with_wrong_type_keys(
    real_redis_url: str, admin: aioredis.Redis, queue: TaskQueue
) -> None:
    failed = await queue.enqueue(jobs.fail)
    await run_burst(redis=real_redis_url, settings=Settings(redis_url=real_redis_url))
    await admin.set("rq:job:x", "str")
    await admin.zadd("rq:failed:default", {"x": 1})
    assert await queue.delete_failed("default") == 1
    assert await admin.exists(f"rq:job:{failed}") == 0
    assert await admin.get("rq:job:x") == b"str"  # not ours to delete: out of the registry only
    assert await admin.zcard("rq:failed:default") == 0
    await admin.sadd("rq:scheduler-lock:default", "w")
    assert await Scripts(admin).call(ReleaseLocksCall(RQKeys("rq"), "w", ["default"])) == 1


async def test_rq_scheduler_bridge_skips_a_wrong_type_job_and_fires_the_rest(
    real_redis_url: str, admin: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    await admin.zadd("rq:scheduler:scheduled_jobs", {"x": now.timestamp() - 1, "good": now.timestamp()})
    await admin.set("rq:job:x", "str")  # rq-scheduler's job hash is a string
    await admin.hset(
        "rq:job:good", mapping={"status": "scheduled", "origin": "default", "data": b"", "description": "d"}
    )
    bridge = RQSchedulerBridge(admin, Settings(), zone=UTC)
    fired = await bridge.fire_due(now)
    assert [f.job_id for f in fired] == ["good"]
    assert await bridge.fire_due(now) == []  # skipped, and reported once
    assert _logged(caplog, "rq-scheduler job x is not fired") == 1
