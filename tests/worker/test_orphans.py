"""Orphan recovery with a real worker process killed by SIGKILL (real redis-server)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from asyncsched.config import Settings
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.worker import Worker
from tests import jobs
from tests.waiting import eventually

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def spawn_worker(url: str, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "asyncsched.worker", "--redis-url", url, "--lease", "2"]
    cmd += ["--heartbeat-interval", "0.5", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize(("policy", "expected"), [("fail", JobStatus.FAILED), ("requeue", JobStatus.QUEUED)])
async def test_killed_worker_jobs_are_recovered(
    real_redis_url: str, tmp_path: Path, policy: str, expected: JobStatus
) -> None:
    settings = Settings(redis_url=real_redis_url)
    flag = tmp_path / "running"
    proc = spawn_worker(real_redis_url)
    try:
        async with TaskQueue(real_redis_url, settings=settings) as q:
            job_id = await q.enqueue(jobs.touch_and_sleep, args=(str(flag), 60))
            await eventually(flag.exists, timeout=30, what="the job to start in the worker process")
            assert await q.status(job_id) == JobStatus.RUNNING
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            reaper = Worker(
                redis=real_redis_url, settings=settings, orphan_policy=policy, lease=2, heartbeat_interval=1
            )
            async with reaper:
                reaped = await eventually(reaper.reap, timeout=30, what="the lease to lapse")
            assert reaped == [(job_id, "failed" if policy == "fail" else "requeued")]
            rec = await q.job(job_id)
            assert rec.status == expected
            assert await q.list_jobs(status=JobStatus.RUNNING) == []
            if policy == "fail":
                assert "worker lost" in (rec.traceback or "")
            else:
                assert rec.attempt == 2
                assert [r.id for r in await q.list_jobs(status=JobStatus.QUEUED)] == [job_id]
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


async def test_sigterm_is_graceful(real_redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=real_redis_url)
    flag = tmp_path / "running"
    proc = spawn_worker(real_redis_url, "--grace-period", "0.5", "--name", "graceful-1")
    try:
        async with TaskQueue(real_redis_url, settings=settings) as q:
            job_id = await q.enqueue(jobs.touch_and_sleep, args=(str(flag), 3))
            await eventually(flag.exists, timeout=30, what="the job to start")
            assert [w.name for w in await q.workers()] == ["graceful-1"]
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
            assert code == 0, proc.stderr.read() if proc.stderr else ""
            rec = await q.job(job_id)
            assert rec.status == JobStatus.QUEUED  # put back: its thread could not finish in the grace period
            assert rec.attempt == 2
            assert await q.workers() == []
    finally:
        stop(proc)


async def test_worker_survives_a_redis_restart(real_redis_url: str, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("real_redis")
    settings = Settings(redis_url=real_redis_url)
    async with (
        TaskQueue(real_redis_url, settings=settings) as q,
        Worker(
            redis=real_redis_url, settings=settings, heartbeat_interval=0.2, lease=5, name="survivor"
        ) as w,
    ):
        task = asyncio.create_task(w.run())
        first = await q.enqueue(jobs.add, args=(1, 1))
        assert await q.result(first, wait=20) == 2
        await asyncio.to_thread(server.restart)  # data is lost; clients reconnect
        second = await eventually(lambda: _try_enqueue(q), timeout=30, what="Redis to accept enqueues")
        assert await q.result(second, wait=30) == 4
        await eventually(lambda: _registered(q), timeout=30, what="the worker to register again")
        w.request_stop()
        await task


async def _try_enqueue(q: TaskQueue) -> str | None:
    try:
        return await q.enqueue(jobs.add, args=(2, 2))
    except ConnectionError:  # BackendUnavailable is a ConnectionError
        return None


async def _registered(q: TaskQueue) -> bool:
    return [w.name for w in await q.workers()] == ["survivor"]
