"""Scenario 1: a real worker process is SIGKILLed while it runs an async and a sync job.

After the lease lapses, a second worker's reaper applies the orphan policy: ``fail`` (at-most-once) fails
both jobs with "worker lost"; ``requeue`` (at-least-once) runs them again. Nothing stays ``running``; RQ
reads the same final status; the Recorder's history ends with the right final state, exactly once.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
import redis as syncredis
from rq.job import Job
from rq.job import JobStatus as RQStatus

from asyncsched.config import Settings
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.store import Database, ExecutionRepository, Recorder
from asyncsched.worker import Worker
from tests.waiting import eventually

from . import chaosjobs, procs

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("policy", ["fail", "requeue"])
async def test_sigkill_mid_job_then_reaper_applies_policy(
    real_redis_url: str, database_url: str, tmp_path: Path, policy: str
) -> None:
    settings = Settings(redis_url=real_redis_url, database_url=database_url)
    flags = {"async": tmp_path / "async.flag", "sync": tmp_path / "sync.flag"}
    victim = procs.worker(real_redis_url, tmp_path / "victim.log", "--name", "victim", "-c", "4", "-t", "2")
    async with (
        Database(database_url, auto_migrate=True) as db,
        Recorder(real_redis_url, db=db, settings=settings, flush_interval=0.05) as recorder,
        TaskQueue(real_redis_url, settings=settings) as q,
    ):
        try:
            ids = {
                "async": await q.enqueue(chaosjobs.async_block_once, args=(str(flags["async"]), 120)),
                "sync": await q.enqueue(chaosjobs.block_once, args=(str(flags["sync"]), 120)),
            }
            await eventually(lambda: all(f.exists() for f in flags.values()), 60, "both jobs to start")
            for job_id in ids.values():
                assert await q.status(job_id) == JobStatus.RUNNING
            victim.signal(signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
            # Still running in Redis: nobody has noticed yet.
            assert {await q.status(i) for i in ids.values()} == {JobStatus.RUNNING}

            reaper = Worker(
                redis=real_redis_url, settings=settings, name="reaper", orphan_policy=policy, lease=2,
                heartbeat_interval=0.5, reap_interval=0.2,
            )  # fmt: skip
            async with reaper:
                runner = asyncio.create_task(reaper.run())
                final = JobStatus.FAILED if policy == "fail" else JobStatus.SUCCESS

                async def settled() -> bool:
                    return all([await q.status(i) == final for i in ids.values()])

                await eventually(settled, 60, f"the reaper to {policy} both orphans")
                reaper.request_stop()
                await asyncio.wait_for(runner, 30)
        finally:
            victim.stop()

        assert await q.list_jobs(status=JobStatus.RUNNING) == []
        conn = syncredis.Redis.from_url(real_redis_url)
        try:
            for job_id in ids.values():
                rq_status = Job.fetch(job_id, connection=conn).get_status()
                assert rq_status == (RQStatus.FAILED if policy == "fail" else RQStatus.FINISHED)
        finally:
            conn.close()
        for job_id in ids.values():
            rec = await q.job(job_id)
            if policy == "fail":
                assert "worker lost" in (rec.traceback or "") + (rec.error or "")
            else:
                assert rec.result == "second"  # really ran a second time
                assert rec.attempt == 2

        repo = ExecutionRepository(db)
        expected = (
            {1: "failed"} if policy == "fail" else {1: "failed", 2: "success"}
        )  # the lost attempt is recorded as failed (retried), the second as success

        async def recorded() -> bool:
            await recorder.flush()
            for job_id in ids.values():
                rows = await repo.attempts(job_id)
                if {r.attempt: r.status for r in rows} != expected:
                    return False
            return True

        await eventually(recorded, 30, f"history to read {expected}")
        for job_id in ids.values():
            rows = await repo.attempts(job_id)
            assert len(rows) == len(expected)  # exactly once per attempt
            assert all(r.ended_at is not None for r in rows)
            assert "running" not in {r.status for r in rows}


async def test_worker_stops_although_a_library_swallows_one_cancel(real_redis_url: str) -> None:
    """redis-py 8.1 swallows a cancel that lands mid-command now and then; ``run()`` must still return."""
    worker = Worker(redis=real_redis_url, settings=Settings(redis_url=real_redis_url), poll_timeout=0.2)
    swallowed = asyncio.Event()

    async def swallow_once() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed.is_set():
                    raise
                swallowed.set()  # like redis-py: the cancel is lost, the loop goes on

    worker.promoter.run = swallow_once  # type: ignore[method-assign]
    async with worker:
        runner = asyncio.create_task(worker.run())
        await eventually(lambda: worker._background, 10, "the worker to start")
        worker.request_stop()
        await asyncio.wait_for(runner, 20)
    assert swallowed.is_set()
