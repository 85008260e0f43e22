"""RQ's job features, made by the real ``rq`` package, under our worker and under the stock RQ worker.

Each scenario runs twice on a flushed Redis: once with our worker, once with ``rq.SimpleWorker`` (the
reference), and the final state in RQ's registries and the side effects must be the same. Run on RQ 2.x
and 3.x by ``nox -s rq_compat``; a feature RQ 2.x does not have is skipped there.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as syncredis
import rq
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from asyncsched.config import Settings
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.testing import run_burst
from tests import jobs

pytestmark = pytest.mark.rq_compat

needs_rq3 = pytest.mark.skipif(not hasattr(rq, "RateLimit"), reason="RateLimit is new in RQ 3")

Scenario = Callable[[syncredis.Redis, Path], list[str]]


@pytest.fixture
def real_conn(real_redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(real_redis_url)
    yield client
    client.close()


def rq_queue(conn: syncredis.Redis, name: str = "default") -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer)


def final_state(conn: syncredis.Redis, ids: list[str], path: Path) -> dict[str, Any]:
    """What RQ sees at the end: each job's status, the registries, the side effects in ``path``."""
    statuses = []
    for job_id in ids:
        raw = conn.hget(f"rq:job:{job_id}", "status")
        statuses.append(raw.decode() if raw else None)
    return {
        "statuses": statuses,
        "finished": FinishedJobRegistry("default", connection=conn).count,
        "failed": FailedJobRegistry("default", connection=conn).count,
        "started": StartedJobRegistry("default", connection=conn).count,
        "queued": conn.llen("rq:queue:default"),
        "notes": sorted(jobs.noted(str(path))),
    }


async def both(conn: syncredis.Redis, url: str, tmp_path: Path, scenario: Scenario) -> dict[str, Any]:
    """Run ``scenario`` under our worker, then under rq.SimpleWorker; assert the same final state."""
    states = []
    for which in ("ours", "rq"):
        conn.flushall()
        path = tmp_path / f"{which}.log"
        ids = scenario(conn, path)
        if which == "ours":
            await run_burst(redis=url, settings=Settings(redis_url=url), concurrency=4)
        else:
            worker = rq.SimpleWorker([rq_queue(conn)], connection=conn, serializer=JSONSerializer)
            worker.work(burst=True)  # main thread (signal handlers); nothing else runs meanwhile
        states.append(final_state(conn, ids, path))
    assert states[0] == states[1], f"ours: {states[0]}\nrq:   {states[1]}"
    return states[0]


@needs_rq3
async def test_rate_limit_runs_every_job_one_at_a_time(
    real_conn: syncredis.Redis, real_redis_url: str, tmp_path: Path
) -> None:
    def scenario(conn: syncredis.Redis, path: Path) -> list[str]:
        q = rq_queue(conn)
        limit = rq.RateLimit("api", concurrency=1)
        return [q.enqueue(jobs.note, str(path), f"j{k}", 0.1, rate_limit=limit).id for k in range(3)]

    state = await both(real_conn, real_redis_url, tmp_path, scenario)
    assert state["statuses"] == ["finished"] * 3
    assert state["notes"] == ["j0", "j1", "j2"]
    # ours ran them one at a time although the worker runs up to 4 jobs at once
    spans = sorted(
        (float(a), float(b))
        for a, b in (line.split()[1:] for line in (tmp_path / "ours.log").read_text().splitlines())
    )
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))
    assert real_conn.zcard("rq:rl:api:allowed") == 0
    assert real_conn.zcard("rq:rl:api:rate_limited") == 0


@needs_rq3
async def test_status_of_a_rate_limited_job(real_conn: syncredis.Redis, real_redis_url: str) -> None:
    q = rq_queue(real_conn)
    limit = rq.RateLimit("slow", concurrency=1)
    first, second = (q.enqueue(jobs.add, k, 1, rate_limit=limit) for k in range(2))
    async with TaskQueue(real_redis_url, settings=Settings(redis_url=real_redis_url)) as ours:
        assert await ours.status(first.id) == JobStatus.QUEUED
        assert await ours.status(second.id) == JobStatus.DEFERRED  # waiting for a slot
        real_conn.hset(f"rq:job:{second.id}", "status", "from_the_future")
        with pytest.raises(Exception, match="from_the_future"):
            await ours.status(second.id)


@needs_rq3
async def test_cancelling_a_job_holding_a_slot_lets_the_next_in(
    real_conn: syncredis.Redis, real_redis_url: str
) -> None:
    q = rq_queue(real_conn)
    limit = rq.RateLimit("one", concurrency=1)
    first, second = (q.enqueue(jobs.add, k, 1, rate_limit=limit) for k in range(2))
    async with TaskQueue(real_redis_url, settings=Settings(redis_url=real_redis_url)) as ours:
        assert await ours.cancel(first.id)
        assert await ours.status(second.id) == JobStatus.QUEUED
    assert real_conn.zrange("rq:rl:one:allowed", 0, -1) == [second.id.encode()]
