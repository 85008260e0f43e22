"""The real rq package reads the jobs TaskQueue writes; the job hash matches RQ's field by field."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis as syncredis
from rq import Queue
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer

from asyncsched.config import Settings
from asyncsched.queue import Retry, TaskQueue
from tests import jobs
from tests.rqhelp import rq_payload, sync_redis

pytestmark = pytest.mark.rq_compat

OURS_ONLY = {
    "asyncsched_agent",
    "asyncsched_task",
    "asyncsched_function_path",
    "asyncsched_attempt",
}
VARYING = {"created_at", "enqueued_at"}
RQ_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture
def conn(redis_url: str) -> Iterator[syncredis.Redis]:
    client = sync_redis(redis_url)
    yield client
    client.close()


async def test_rq_fetches_our_job(redis_url: str, conn: syncredis.Redis) -> None:
    async with TaskQueue(redis_url, settings=Settings(redis_url=redis_url)) as q:
        job_id = await q.enqueue(
            jobs.add, args=(2, 3), meta={"m": 1}, retry=Retry(2, [1, 5]), result_ttl=100, failure_ttl=200
        )
        sched = await q.enqueue(jobs.add, args=(1, 1), delay=3600)
    job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    assert job.get_status() == RQStatus.QUEUED
    assert (job.func_name, job.args, job.kwargs) == ("tests.jobs.add", [2, 3], {})
    assert job.meta == {"m": 1}
    assert (job.retries_left, job.retry_intervals) == (2, [1, 5])
    assert (job.result_ttl, job.failure_ttl, job.timeout, job.origin) == (100, 200, 180, "default")
    assert job.description == "tests.jobs.add(2, 3)"
    rq_queue = Queue("default", connection=conn, serializer=JSONSerializer)
    assert rq_queue.job_ids == [job_id]
    # listed in RQ's set of queues, as `rq info` and rq-dashboard find them
    assert [queue.name for queue in Queue.all(connection=conn, serializer=JSONSerializer)] == ["default"]
    assert Job.fetch(sched, connection=conn, serializer=JSONSerializer).get_status() == RQStatus.SCHEDULED
    assert rq_queue.scheduled_job_registry.get_job_ids() == [sched]


@pytest.mark.parametrize("serializer", ["json", "pickle"])
async def test_job_hash_matches_rq_field_by_field(
    redis_url: str, conn: syncredis.Redis, serializer: str
) -> None:
    rq_serializer = JSONSerializer if serializer == "json" else None
    before = datetime.now(UTC) - timedelta(milliseconds=10)
    rq_job = Queue("default", connection=conn, serializer=rq_serializer).enqueue(
        jobs.echo, 2, "x", key=[1, 2], retry=__import__("rq").Retry(max=2, interval=[3, 4]), meta={"a": 1}
    )
    async with TaskQueue(redis_url, settings=Settings(redis_url=redis_url), serializer=serializer) as q:
        ours = await q.enqueue(
            jobs.echo, args=(2, "x"), kwargs={"key": [1, 2]}, retry=Retry(2, [3, 4]), meta={"a": 1}
        )
    after = datetime.now(UTC) + timedelta(milliseconds=10)
    theirs_h = {k.decode(): v for k, v in conn.hgetall(f"rq:job:{rq_job.id}").items()}
    ours_h = {k.decode(): v for k, v in conn.hgetall(f"rq:job:{ours}").items()}
    assert set(ours_h) - OURS_ONLY == set(theirs_h)
    for field, value in theirs_h.items():
        if field in VARYING:
            # RQ's timestamp text exactly (microseconds, 'Z'), and the moment of the enqueue
            for h in (theirs_h, ours_h):
                assert RQ_TS.fullmatch(h[field].decode()), (field, h[field])
                moment = datetime.strptime(h[field].decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                assert before <= moment <= after, (field, moment, before, after)
        elif field == "data" and serializer == "pickle":
            # pickle of a list (RQ pickles the tuple (name, instance, args, kwargs) too): same content
            import pickle
            import zlib

            assert pickle.loads(rq_payload(ours_h[field])) == pickle.loads(zlib.decompress(value))
        elif field == "data":
            # the same payload, as RQ reads it (ours: uncompressed when small, else a zlib stream with a
            # window sized to it: codec.pack_data)
            import zlib

            assert rq_payload(ours_h[field]) == zlib.decompress(value)
        else:
            assert ours_h[field] == value, field
    assert ours_h["created_at"] <= ours_h["enqueued_at"]
