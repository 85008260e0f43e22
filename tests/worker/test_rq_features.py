"""RQ's job features, made by the real ``rq`` package, under our worker and under the stock RQ worker.

Each scenario runs twice on a flushed Redis: once with our worker, once with the stock ``rq worker``
(the reference, in its own process); the final state in RQ's registries and the side effects must be
the same. Run on RQ 2.x and 3.x by ``nox -s rq_compat``; a feature RQ 2.x lacks is skipped there.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as syncredis
import rq
from rq import Queue
from rq.command import send_stop_job_command
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.suspension import resume, suspend

from asyncsched.config import Settings
from asyncsched.exceptions import InvalidJob
from asyncsched.queue import Callback, JobStatus, RateLimit, Repeat, TaskQueue
from asyncsched.testing import run_burst
from asyncsched.worker import Worker
from tests import jobs
from tests.waiting import eventually
from tests.worker.test_rq_interop import rq_cli

pytestmark = pytest.mark.rq_compat
# Single node, but for the producer's validation: every other test drives the real `rq` package (or the
# stock `rq worker`), which has no Redis Cluster support.

needs_rq3 = pytest.mark.skipif(not hasattr(rq, "RateLimit"), reason="RateLimit is new in RQ 3")

Scenario = Callable[[syncredis.Redis, Path], list[str] | Awaitable[list[str]]]


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
        made = scenario(conn, path)
        ids = await made if inspect.isawaitable(made) else made
        if which == "ours":
            await run_burst(redis=url, settings=Settings(redis_url=url), concurrency=4)
        else:  # the stock `rq worker`, in its own process
            proc = await asyncio.to_thread(
                rq_cli, "worker", "--burst", "--serializer", "rq.serializers.JSONSerializer", url=url
            )
            assert proc.returncode == 0 or "suspended" in proc.stdout, proc.stderr
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


def error_lines(conn: syncredis.Redis, ids: list[str]) -> list[str | None]:
    """The last line of each job's latest failure (as RQ reads it), or None."""
    out: list[str | None] = []
    for job_id in ids:
        result = Job.fetch(job_id, connection=conn, serializer=JSONSerializer).latest_result()
        text = (result.exc_string or "").strip() if result is not None else ""
        out.append(text.splitlines()[-1] if text else None)
    return out


async def test_callbacks_run_with_rq_signatures(
    real_conn: syncredis.Redis, real_redis_url: str, tmp_path: Path
) -> None:
    errors: dict[str, list[str | None]] = {}

    def scenario(conn: syncredis.Redis, path: Path) -> list[str]:
        q = rq_queue(conn)
        ok, fail, broken = (
            rq.Callback(jobs.cb_success),
            rq.Callback(jobs.cb_failure),
            rq.Callback(jobs.cb_broken),
        )
        return [
            q.enqueue(jobs.note, str(path), "a", job_id="a", on_success=ok, on_failure=fail).id,
            q.enqueue(jobs.note_fail, str(path), "b", job_id="b", on_success=ok, on_failure=fail).id,
            # a success callback that raises fails the job, and its failure callback sees that error
            q.enqueue(jobs.note, str(path), "c", job_id="c", on_success=broken, on_failure=fail).id,
            # a failure callback that raises replaces the job's error
            q.enqueue(jobs.note_fail, str(path), "d", job_id="d", on_failure=broken).id,
        ]

    state = await both(real_conn, real_redis_url, tmp_path, scenario)
    errors["rq"] = error_lines(real_conn, ["a", "b", "c", "d"])
    assert state["statuses"] == ["finished", "failed", "failed", "failed"]
    assert state["notes"] == sorted(
        ["a", "on_success:a:a", "b", "on_failure:b:ValueError", "c", "on_failure:c:RuntimeError", "d"]
    )
    assert errors["rq"][1:] == [
        "ValueError: b",
        "RuntimeError: callback broke",
        "RuntimeError: callback broke",
    ]
    # and ours wrote the same errors (run again: `both` leaves the reference's state behind)
    real_conn.flushall()
    scenario(real_conn, tmp_path / "again.log")
    await run_burst(redis=real_redis_url, settings=Settings(redis_url=real_redis_url))
    assert error_lines(real_conn, ["a", "b", "c", "d"]) == errors["rq"]


async def test_callback_timeout_fails_the_job(
    real_conn: syncredis.Redis, real_redis_url: str, tmp_path: Path
) -> None:
    q = rq_queue(real_conn)
    job = q.enqueue(jobs.note, str(tmp_path / "t.log"), "t", on_success=rq.Callback(jobs.cb_slow, timeout=1))
    await run_burst(redis=real_redis_url, settings=Settings(redis_url=real_redis_url))
    fetched = Job.fetch(job.id, connection=real_conn, serializer=JSONSerializer)
    assert fetched.get_status() == rq.job.JobStatus.FAILED
    assert "exceeded its timeout (1 seconds)" in (fetched.latest_result().exc_string or "")  # type: ignore[union-attr]


async def test_stopped_callback(real_conn: syncredis.Redis, real_redis_url: str, tmp_path: Path) -> None:
    path = str(tmp_path / "s.log")
    q = rq_queue(real_conn)
    job = q.enqueue(jobs.async_touch_and_sleep, path + ".flag", 30, on_stopped=rq.Callback(jobs.cb_stopped))
    settings = Settings(redis_url=real_redis_url)
    async with Worker(redis=real_redis_url, settings=settings, poll_timeout=0.2) as worker:
        task = asyncio.create_task(worker.run())
        await eventually(lambda: Path(path + ".flag").exists(), what="the job to start")
        channel = f"rq:pubsub:{worker.name}"
        await eventually(
            lambda: real_conn.pubsub_numsub(channel)[0][1], what="the worker to listen for commands"
        )
        send_stop_job_command(real_conn, job.id, serializer=JSONSerializer)
        # (the job wrote its pid to the flag file without a newline: the note ends that line)
        expected = f"on_stopped:{job.id}"
        await eventually(
            lambda: jobs.noted(path + ".flag")[-1].endswith(expected), what="the stopped callback"
        )
        worker.request_stop()
        await task
    assert Job.fetch(job.id, connection=real_conn, serializer=JSONSerializer).get_status() == "stopped"


@pytest.mark.skipif(not hasattr(rq, "Repeat"), reason="rq.Repeat is new in RQ 2.2")
async def test_repeat_runs_times_plus_one(
    real_conn: syncredis.Redis, real_redis_url: str, tmp_path: Path
) -> None:
    def scenario(conn: syncredis.Redis, path: Path) -> list[str]:
        return [rq_queue(conn).enqueue(jobs.note, str(path), "r", repeat=rq.Repeat(times=2)).id]

    state = await both(real_conn, real_redis_url, tmp_path, scenario)
    assert state["statuses"] == ["finished"]
    assert state["notes"] == ["r", "r", "r"]


@pytest.mark.skipif(not hasattr(rq, "Repeat"), reason="rq.Repeat is new in RQ 2.2")
async def test_repeat_with_an_interval_is_scheduled(real_conn: syncredis.Redis, real_redis_url: str) -> None:
    job = rq_queue(real_conn).enqueue(jobs.add, 1, 2, repeat=rq.Repeat(times=2, interval=[30, 60]))
    await run_burst(redis=real_redis_url, settings=Settings(redis_url=real_redis_url))
    fetched = Job.fetch(job.id, connection=real_conn, serializer=JSONSerializer)
    assert fetched.get_status() == "scheduled"
    assert (fetched.repeats_left, fetched.repeat_intervals) == (1, [60])
    score = real_conn.zscore("rq:scheduled:default", job.id)
    assert score is not None
    assert 20 < score - time.time() <= 31
    assert FinishedJobRegistry("default", connection=real_conn).count == 1  # the first run is recorded


async def test_current_job_inside_jobs(
    real_conn: syncredis.Redis, real_redis_url: str, tmp_path: Path
) -> None:
    def scenario(conn: syncredis.Redis, path: Path) -> list[str]:
        q = rq_queue(conn)
        return [
            q.enqueue(jobs.note_current, str(path), job_id="sync-job").id,
            q.enqueue(jobs.anote_current, str(path), job_id="async-job").id,
        ]

    state = await both(real_conn, real_redis_url, tmp_path, scenario)
    assert state["notes"] == ["rq:async-job", "rq:sync-job"]
    real_conn.flushall()
    scenario(real_conn, tmp_path / "ours.log")
    await run_burst(redis=real_redis_url, settings=Settings(redis_url=real_redis_url))
    for job_id in ("sync-job", "async-job"):  # asyncsched.current_job() too
        assert Job.fetch(job_id, connection=real_conn, serializer=JSONSerializer).return_value() == job_id


async def test_suspended_burst_workers_run_nothing(
    real_conn: syncredis.Redis, real_redis_url: str, tmp_path: Path
) -> None:
    def scenario(conn: syncredis.Redis, path: Path) -> list[str]:
        suspend(conn)
        return [rq_queue(conn).enqueue(jobs.note, str(path), "s").id]

    state = await both(real_conn, real_redis_url, tmp_path, scenario)
    assert state["statuses"] == ["queued"]
    assert state["queued"] == 1


async def test_suspend_and_resume_a_running_worker(
    real_conn: syncredis.Redis, real_redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(redis_url=real_redis_url)
    async with (
        TaskQueue(real_redis_url, settings=settings) as q,
        Worker(redis=real_redis_url, settings=settings, poll_timeout=0.2) as worker,
    ):
        task = asyncio.create_task(worker.run())
        first = await q.enqueue(jobs.add, args=(1, 1))
        assert await q.result(first, wait=10) == 2
        suspend(real_conn)  # as `rq suspend` does
        await eventually(
            lambda: real_conn.hget(f"rq:worker:{worker.name}", "state") == b"suspended",
            what="the worker to notice",
        )
        held = await q.enqueue(jobs.add, args=(2, 2))
        await asyncio.sleep(1.5)  # a suspended worker must not take it: nothing to await but time
        assert await q.status(held) == JobStatus.QUEUED
        resume(real_conn)
        assert await q.result(held, wait=10) == 4
        worker.request_stop()
        await task


async def test_our_producer_writes_rq_features_both_workers_honour(
    real_conn: syncredis.Redis, real_redis_url: str, tmp_path: Path
) -> None:
    """depends_on (+ allow_dependency_failures), callbacks, repeat and rate_limit from TaskQueue.enqueue:
    the stock rq worker and ours end in the same state."""
    settings = Settings(redis_url=real_redis_url)
    with_limit = hasattr(rq, "RateLimit")
    with_repeat = hasattr(rq, "Repeat")

    async def scenario(conn: syncredis.Redis, path: Path) -> list[str]:
        p = str(path)
        async with TaskQueue(real_redis_url, settings=settings, serializer="json") as q:
            parent = await q.enqueue(jobs.note, args=(p, "parent"), job_id="parent")
            bad = await q.enqueue(jobs.note_fail, args=(p, "bad"), job_id="bad")
            ids = [
                parent,
                bad,
                await q.enqueue(jobs.note, args=(p, "child"), job_id="child", depends_on=parent),
                await q.enqueue(jobs.note, args=(p, "orphan"), job_id="orphan", depends_on=[parent, bad]),
                await q.enqueue(
                    jobs.note,
                    args=(p, "tolerant"),
                    job_id="tolerant",
                    depends_on=[parent, bad],
                    allow_dependency_failures=True,
                ),
                await q.enqueue(
                    jobs.note,
                    args=(p, "called"),
                    job_id="called",
                    on_success=Callback(jobs.cb_success, timeout=5),
                    on_failure="tests.jobs:cb_failure",
                ),
                await q.enqueue(jobs.note_fail, args=(p, "boom"), job_id="boom", on_failure=jobs.cb_failure),
            ]
            if with_repeat:
                ids.append(await q.enqueue(jobs.note, args=(p, "again"), job_id="again", repeat=Repeat(2)))
            if with_limit:
                limit = RateLimit("rl", 1)
                ids += [
                    await q.enqueue(jobs.note, args=(p, f"lim{k}"), job_id=f"lim{k}", rate_limit=limit)
                    for k in range(3)
                ]
        return ids

    state = await both(real_conn, real_redis_url, tmp_path, scenario)
    names = ["parent", "bad", "child", "orphan", "tolerant", "called", "boom"]
    statuses = dict(zip(names, state["statuses"][:7], strict=True))
    assert statuses == {
        "parent": "finished",
        "bad": "failed",
        "child": "finished",
        "orphan": "deferred",
        "tolerant": "finished",
        "called": "finished",
        "boom": "failed",
    }
    expected = ["parent", "bad", "child", "tolerant", "called", "on_success:called:called", "boom"]
    expected.append("on_failure:boom:ValueError")
    expected += ["again"] * 3 if with_repeat else []
    expected += ["lim0", "lim1", "lim2"] if with_limit else []
    assert state["notes"] == sorted(expected)
    assert state["statuses"][7:] == ["finished"] * (int(with_repeat) + 3 * int(with_limit))


@pytest.mark.cluster
async def test_producer_options_are_validated(redis_url: str) -> None:
    async with TaskQueue(redis_url, settings=Settings(redis_url=redis_url)) as q:
        with pytest.raises(InvalidJob, match="depends_on"):
            await q.enqueue(jobs.add, args=(1, 2), depends_on=["not an id"])
        with pytest.raises(InvalidJob, match="at/delay"):
            await q.enqueue(jobs.add, args=(1, 2), depends_on="x", delay=60)
        with pytest.raises(InvalidJob, match="module level"):
            await q.enqueue(jobs.add, args=(1, 2), on_success=lambda *a: None)
        with pytest.raises(ValueError, match="concurrency"):
            RateLimit("k", 0)
        with pytest.raises(ValueError, match="times"):
            Repeat(0)


@needs_rq3
async def test_unsupported_rq_features_are_refused_naming_them(
    real_conn: syncredis.Redis, real_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    q = rq_queue(real_conn)
    hooked = q.enqueue(jobs.add, 1, 2, webhooks=[rq.webhook.Webhook("http://127.0.0.1:9/hook", "finished")])
    returned = q.enqueue(jobs.return_rq_retry)
    bound = Queue("default", connection=real_conn).enqueue(jobs.Counter().bump)  # pickle: an instance
    await run_burst(redis=real_redis_url, settings=Settings(redis_url=real_redis_url), accept_pickle=True)
    for job, feature in ((hooked, "webhooks"), (returned, "rq.Retry"), (bound, "bound method")):
        fetched = Job.fetch(job.id, connection=real_conn, serializer=JSONSerializer)
        assert fetched.get_status() == "failed"
        assert feature in (fetched.latest_result().exc_string or "")  # type: ignore[union-attr]
        assert any(feature in r.getMessage() and job.id in r.getMessage() for r in caplog.records)
