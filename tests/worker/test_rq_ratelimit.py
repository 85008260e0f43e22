"""RQ 3's ``RateLimit`` is one budget for RQ's workers and ours (issue 17): RQ's producer and ours, RQ's
workers and ours, all on one limit on a real redis-server, measured by the jobs' own clocks
(``tests.jobs.note``)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis as syncredis
import rq
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from asyncsched.config import Settings
from asyncsched.queue import RateLimit, TaskQueue
from asyncsched.testing import run_burst
from asyncsched.worker import Worker
from tests import jobs, limit_jobs
from tests.waiting import eventually
from tests.worker.test_rq_interop import rq_cli

pytestmark = [
    pytest.mark.rq_compat,
    pytest.mark.skipif(not hasattr(rq, "RateLimit"), reason="RateLimit is new in RQ 3"),
]

JSON = "rq.serializers.JSONSerializer"


@pytest.fixture
def conn(real_redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(real_redis_url)
    yield client
    client.close()


def _spans(path: Path) -> dict[str, tuple[float, float]]:
    """label -> (start, end) of each ``jobs.note`` run, as the job saw them."""
    out = {}
    for line in path.read_text().splitlines():
        label, start, end = line.split()
        out[label] = (float(start), float(end))
    return out


def _rq_worker(url: str) -> asyncio.Task[subprocess.CompletedProcess[str]]:
    """The stock ``rq worker --burst``, in its own process."""
    return asyncio.create_task(asyncio.to_thread(rq_cli, "worker", "--burst", "--serializer", JSON, url=url))


def _when(conn: syncredis.Redis, job_id: str, field: str) -> float:
    raw = conn.hget(f"rq:job:{job_id}", field)
    assert raw, f"{job_id} has no {field}"
    return datetime.strptime(raw.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


async def test_a_job_that_skipped_rqs_admission_waits_in_rqs_line(
    conn: syncredis.Redis, real_redis_url: str, tmp_path: Path
) -> None:
    """Our claim script checks RQ 3's RateLimit on RQ's own keys: a job of the key that reached its queue
    without a slot (a producer or a requeue that skipped RQ's admission) while RQ's worker holds the only
    one waits in RQ's line (``rq:rl:<key>:rate_limited``, status ``rate_limited``); RQ's worker, finishing,
    lets it in (RQ's ``release_slot``) and it runs after the holder, never beside it."""
    q = Queue("default", connection=conn, serializer=JSONSerializer)
    running, release, log = tmp_path / "running", tmp_path / "release", tmp_path / "log"
    holder = q.enqueue(jobs.touch_and_wait, str(running), str(release), rate_limit=rq.RateLimit("one", 1))
    rq_run = _rq_worker(real_redis_url)
    await eventually(running.exists, 60, "RQ's worker to start the holder")
    stray = Job.create(
        jobs.note, args=(str(log), "stray"), connection=conn, serializer=JSONSerializer, origin="default"
    )
    stray.rate_limit_key, stray.rate_limit_concurrency = "one", 1
    stray.save()
    q.push_job_id(stray.id)  # onto the queue, no slot taken
    ours = asyncio.create_task(run_burst(redis=real_redis_url, settings=Settings(redis_url=real_redis_url)))
    try:

        def waits() -> bool:
            return conn.zscore("rq:rl:one:rate_limited", stray.id) is not None

        await eventually(waits, 30, "the stray job to wait in RQ's line")
        assert conn.hget(f"rq:job:{stray.id}", "status") == b"rate_limited"
        assert not ours.done()  # a burst worker waits for a job of its queue waiting for a slot
    finally:
        release.touch()  # the holder ends on RQ's worker: RQ's release_slot lets the stray job in
    await asyncio.wait_for(ours, 60)
    assert (await asyncio.wait_for(rq_run, 60)).returncode == 0
    assert conn.hget(f"rq:job:{stray.id}", "status") == b"finished"
    assert _spans(log)["stray"][0] >= _when(conn, holder.id, "ended_at")
    assert conn.zcard("rq:rl:one:allowed") == conn.zcard("rq:rl:one:rate_limited") == 0


@pytest.mark.slow
async def test_rqs_workers_and_ours_share_one_ratelimit(
    conn: syncredis.Redis, real_redis_url: str, tmp_path: Path
) -> None:
    """RateLimit("shared", 2): 8 jobs from RQ's producer and 8 from ours, taken at once by two stock RQ
    worker processes and our worker (4 slots): never more than 2 run at once (the jobs' own clocks), RQ's
    workers and ours each ran some, and the limit's sets end empty."""
    log = tmp_path / "log"
    q = Queue("default", connection=conn, serializer=JSONSerializer)
    labels = [f"rq{k}" for k in range(8)] + [f"ours{k}" for k in range(8)]
    ids = [
        q.enqueue(jobs.note, str(log), label, 0.25, rate_limit=rq.RateLimit("shared", 2)).id
        for label in labels[:8]
    ]
    settings = Settings(redis_url=real_redis_url)
    limit = RateLimit("shared", 2)
    async with TaskQueue(real_redis_url, settings=settings, serializer="json") as ours_q:
        ids += [
            await ours_q.enqueue(jobs.note, args=(str(log), k, 0.25), rate_limit=limit) for k in labels[8:]
        ]
    rq_runs = [_rq_worker(real_redis_url) for _ in range(2)]
    await eventually(lambda: len(rq.Worker.all(connection=conn)) == 2, 60, "RQ's workers to start")
    await run_burst(redis=real_redis_url, settings=settings, concurrency=4, name="ours")
    for run in rq_runs:
        assert (await asyncio.wait_for(run, 60)).returncode == 0
    spans = _spans(log)
    assert sorted(spans) == sorted(labels)
    assert limit_jobs.max_overlap(list(spans.values())) <= 2
    ran_by = {conn.hget(f"rq:job:{job_id}", "worker_name") for job_id in ids}
    assert b"ours" in ran_by, ran_by
    assert len(ran_by - {b"ours"}) >= 1, ran_by  # and RQ's
    assert conn.zcard("rq:rl:shared:allowed") == conn.zcard("rq:rl:shared:rate_limited") == 0


def _waits_in_rqs_line(conn: syncredis.Redis, key: str, job_id: str) -> bool:
    """The job waits for a slot as RQ's admission leaves it (RQ's workers cannot take it from there)."""
    return (
        conn.zscore(f"rq:rl:{key}:rate_limited", job_id) is not None
        and conn.hget(f"rq:job:{job_id}", "status") == b"rate_limited"
        and job_id.encode() not in conn.lrange("rq:queue:default", 0, -1)
    )


async def test_our_requeue_goes_through_rqs_admission(conn: syncredis.Redis, real_redis_url: str) -> None:
    """A failed RateLimit job put back by ``TaskQueue.requeue`` while another holds the only slot waits in
    RQ's line, as after RQ's own requeue: on the queue, a stock RQ worker would run it beside the holder."""
    q = Queue("default", connection=conn, serializer=JSONSerializer)
    failed = q.enqueue(jobs.fail, rate_limit=rq.RateLimit("one", 1))
    settings = Settings(redis_url=real_redis_url)
    await run_burst(redis=real_redis_url, settings=settings)
    holder = q.enqueue(jobs.add, 1, 1, rate_limit=rq.RateLimit("one", 1))  # takes the slot
    async with TaskQueue(real_redis_url, settings=settings) as ours:
        await ours.requeue(failed.id)
    assert _waits_in_rqs_line(conn, "one", failed.id)
    await run_burst(redis=real_redis_url, settings=settings)  # the holder, then the requeued job
    assert [conn.hget(f"rq:job:{j}", "status") for j in (holder.id, failed.id)] == [b"finished", b"failed"]


async def test_our_promoter_goes_through_rqs_admission(conn: syncredis.Redis, real_redis_url: str) -> None:
    """A scheduled RateLimit job (a retry, RQ's enqueue_in) promoted by our worker while another holds the
    only slot waits in RQ's line, as RQ's scheduler leaves it."""
    q = Queue("default", connection=conn, serializer=JSONSerializer)
    holder = q.enqueue(jobs.add, 1, 1, rate_limit=rq.RateLimit("one", 1))
    later = q.enqueue_in(timedelta(seconds=0), jobs.add, 2, 2, rate_limit=rq.RateLimit("one", 1))
    settings = Settings(redis_url=real_redis_url)
    async with Worker(redis=real_redis_url, settings=settings) as w:
        assert await w.promoter.promote_once() == 1
    assert _waits_in_rqs_line(conn, "one", later.id)
    await run_burst(redis=real_redis_url, settings=settings)
    assert [conn.hget(f"rq:job:{j}", "status") for j in (holder.id, later.id)] == [b"finished"] * 2


async def test_a_limit_whose_keys_are_not_rqs_is_said_not_a_lost_job(
    conn: syncredis.Redis, real_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RQ's line of the limit is a string (a foreign writer's): the promoted job is queued without its limit
    and the promoter says so; the other queues' promotion goes on."""
    q = Queue("default", connection=conn, serializer=JSONSerializer)
    later = q.enqueue_in(timedelta(seconds=0), jobs.add, 2, 2, rate_limit=rq.RateLimit("odd", 1))
    conn.set("rq:rl:odd:rate_limited", "not a zset")
    async with Worker(redis=real_redis_url, settings=Settings(redis_url=real_redis_url)) as w:
        assert await w.promoter.promote_once() == 1
    assert conn.lrange("rq:queue:default", 0, -1) == [later.id.encode()]
    assert "its rate limit" in caplog.text
    assert "WRONGTYPE" in caplog.text


async def test_a_requeue_whose_limit_keys_are_not_rqs_says_so(
    conn: syncredis.Redis, real_redis_url: str
) -> None:
    """The same on ``TaskQueue.requeue``: the job goes back on its queue without its limit, and the call
    fails naming the reason instead of passing in silence."""
    q = Queue("default", connection=conn, serializer=JSONSerializer)
    failed = q.enqueue(jobs.fail, rate_limit=rq.RateLimit("odd", 1))
    settings = Settings(redis_url=real_redis_url)
    await run_burst(redis=real_redis_url, settings=settings)
    conn.set("rq:rl:odd:rate_limited", "not a zset")
    async with TaskQueue(real_redis_url, settings=settings) as ours:
        with pytest.raises(Exception, match=r"requeued without its rate limit.*WRONGTYPE"):
            await ours.requeue(failed.id)
    assert conn.lrange("rq:queue:default", 0, -1) == [failed.id.encode()]
