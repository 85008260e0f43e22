"""RQ's results streams (``rq:results:<id>``) as the worker writes them, on a real redis-server: sized to
their entries (Redis >= 7.0 reserves ~4 KB for a stream XADD creates), every result kept across reruns, and
the scratch stream the copy goes through never left behind, whatever a foreign writer left there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as syncredis
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

from asyncsched.config import Settings
from asyncsched.queue import TaskQueue
from asyncsched.rq.slots import result_scratch
from asyncsched.testing import run_burst

pytestmark = pytest.mark.rq_compat  # read back by RQ's own Job (RQ 2.0 and the newest)


@pytest.fixture
def real_conn(real_redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(real_redis_url)
    yield client
    client.close()


async def _run(url: str, *specs: tuple[str, tuple[object, ...]]) -> list[str]:
    settings = Settings(redis_url=url)
    async with TaskQueue(url, settings=settings) as q:
        ids = [await q.enqueue(func, args=args, job_id=f"r{n}") for n, (func, args) in enumerate(specs)]
    await run_burst(["default"], redis=url, settings=settings)
    return ids


async def test_a_jobs_results_stream_is_sized_to_its_entry_and_rq_reads_it(
    real_conn: syncredis.Redis, real_redis_url: str
) -> None:
    ids = await _run(real_redis_url, ("tests.jobs.add", (2, 3)), ("tests.jobs.fail", ("no",)))
    for job_id in ids:
        # one entry: ~0.8 KB (a stream made by XADD: ~4.7 KB, its first block reserved for more entries)
        assert real_conn.memory_usage(f"rq:results:{job_id}", samples=0) < 1500
    assert real_conn.ttl(f"rq:results:{ids[0]}") > 0  # result_ttl (a failure's: failure_ttl, none here)
    ok = Job.fetch(ids[0], connection=real_conn, serializer=JSONSerializer)
    assert ok.return_value() == 5
    failed = Job.fetch(ids[1], connection=real_conn, serializer=JSONSerializer).latest_result()
    assert failed is not None
    assert failed.type == Result.Type.FAILED
    assert "no" in (failed.exc_string or "")
    assert real_conn.keys("rq:asyncsched:result-scratch:*") == []


async def test_a_rerun_appends_to_the_jobs_results_stream(
    real_conn: syncredis.Redis, real_redis_url: str
) -> None:
    await _run(real_redis_url, ("tests.jobs.add", (1, 1)))
    await _run(real_redis_url, ("tests.jobs.add", (2, 2)))  # the same id again: its stream exists
    entries = real_conn.xrange("rq:results:r0")
    assert len(entries) == 2
    assert Job.fetch("r0", connection=real_conn, serializer=JSONSerializer).return_value() == 4
    assert real_conn.keys("rq:asyncsched:result-scratch:*") == []


async def test_whatever_a_foreign_writer_left_in_the_scratch_key_results_are_written(
    real_conn: syncredis.Redis, real_redis_url: str
) -> None:
    scratch = result_scratch("rq", "default")
    real_conn.set(scratch, "not a stream")
    await _run(real_redis_url, ("tests.jobs.add", (2, 3)))
    assert Job.fetch("r0", connection=real_conn, serializer=JSONSerializer).return_value() == 5
    assert not real_conn.exists(scratch)
    real_conn.xadd(scratch, {"left": "by a call that failed half way"})
    await _run(real_redis_url, ("tests.jobs.add", (3, 3)))  # r0 again: its stream gets a second entry
    assert [e[1].get(b"left") for e in real_conn.xrange("rq:results:r0")] == [None, None]
    assert not real_conn.exists(scratch)
