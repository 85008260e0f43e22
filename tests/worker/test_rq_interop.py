"""Interoperability with the real rq package, both ways (run with rq 2.x and 3.x by nox -s rq_compat)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as syncredis
import rq
from rq import Queue
from rq.command import send_stop_job_command
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from asyncsched._keys import lifecycle_stream
from asyncsched._lifecycle import LifecycleRecord
from asyncsched.config import Settings
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.testing import run_burst
from asyncsched.worker import Worker
from tests import jobs
from tests.rqhelp import sync_redis
from tests.waiting import eventually

pytestmark = pytest.mark.rq_compat

ROOT = Path(__file__).resolve().parents[2]
RQ_BIN = shutil.which("rq", path=str(Path(sys.executable).parent)) or "rq"


@pytest.fixture
def conn(redis_url: str) -> Iterator[syncredis.Redis]:
    client = sync_redis(redis_url)
    yield client
    client.close()


@pytest.fixture
def real_conn(real_redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(real_redis_url)
    yield client
    client.close()


def rq_cli(*args: str, url: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [RQ_BIN, *args, "--url", url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("serializer", ["pickle", "json"])
async def test_rq_jobs_run_on_our_worker(
    redis_url: str, wsettings: Settings, conn: syncredis.Redis, serializer: str
) -> None:
    ser = JSONSerializer if serializer == "json" else None
    q = Queue("default", connection=conn, serializer=ser)
    ok = q.enqueue(jobs.add, 2, 3)
    aok = q.enqueue(jobs.async_add, 1, 1)
    bad = q.enqueue(jobs.fail, "nope")
    await run_burst(redis=redis_url, settings=wsettings, accept_pickle=serializer == "pickle")
    job = Job.fetch(ok.id, connection=conn, serializer=ser)
    assert job.get_status() == rq.job.JobStatus.FINISHED
    assert job.return_value() == 5
    latest = job.latest_result()
    assert latest is not None
    assert latest.type == Result.Type.SUCCESSFUL
    assert Job.fetch(aok.id, connection=conn, serializer=ser).return_value() == 2
    failed = Job.fetch(bad.id, connection=conn, serializer=ser)
    assert failed.get_status() == rq.job.JobStatus.FAILED
    failure = failed.latest_result()
    assert failure is not None
    assert failure.type == Result.Type.FAILED
    assert "ValueError: nope" in (failure.exc_string or "")
    assert failed.ended_at is not None
    assert FinishedJobRegistry("default", connection=conn).count == 2
    assert FailedJobRegistry("default", connection=conn).count == 1
    assert StartedJobRegistry("default", connection=conn).count == 0
    # and our API reads what RQ reads
    async with TaskQueue(redis_url, settings=wsettings, serializer=serializer) as ours:
        assert await ours.result(ok.id) == 5
        assert await ours.status(bad.id) == JobStatus.FAILED


async def test_pickled_rq_job_refused_without_accept_pickle(
    redis_url: str, wsettings: Settings, conn: syncredis.Redis
) -> None:
    job = Queue("default", connection=conn).enqueue(jobs.add, 2, 3)
    await run_burst(redis=redis_url, settings=wsettings)
    fetched = Job.fetch(job.id, connection=conn)
    assert fetched.get_status() == rq.job.JobStatus.FAILED
    assert "does not accept pickle" in (fetched.latest_result().exc_string or "")  # type: ignore[union-attr]


@pytest.mark.parametrize("worker_class", ["rq.Worker", "rq.SimpleWorker"])
async def test_our_jobs_on_stock_rq_worker(real_redis_url: str, worker_class: str) -> None:
    settings = Settings(redis_url=real_redis_url)
    async with TaskQueue(real_redis_url, settings=settings) as q:
        ok = await q.enqueue(jobs.add, args=(2, 3), agent_name="a")
        bad = await q.enqueue("tests.jobs:fail", args=("rq saw it",))
        proc = rq_cli(
            "worker",
            "--burst",
            "-w",
            worker_class,
            "--serializer",
            "rq.serializers.JSONSerializer",
            url=real_redis_url,
        )
        assert proc.returncode == 0, proc.stderr
        assert await q.status(ok) == JobStatus.SUCCESS
        assert await q.result(ok) == 5
        rec = await q.job(bad)
        assert rec.status == JobStatus.FAILED
        assert "ValueError: rq saw it" in (rec.error or "")
        assert rec.agent_name is None  # enqueued without one
        assert (await q.job(ok)).agent_name == "a"  # our own fields survive a stock RQ worker's writes
    async with TaskQueue(real_redis_url, settings=settings, serializer="pickle") as pq:
        pj = await pq.enqueue(jobs.add, args=(20, 22))
        proc = rq_cli("worker", "--burst", "-w", worker_class, url=real_redis_url)
        assert proc.returncode == 0, proc.stderr
        assert await pq.result(pj) == 42


def test_rq_simpleworker_in_process(redis_url: str, conn: syncredis.Redis) -> None:
    from asyncsched.sync import TaskQueue as SyncTaskQueue

    settings = Settings(redis_url=redis_url)
    with SyncTaskQueue(redis_url, settings=settings) as q:
        job_id = q.enqueue(jobs.add, args=(5, 6))
        rq_queue = Queue("default", connection=conn, serializer=JSONSerializer)
        worker = rq.SimpleWorker([rq_queue], connection=conn, serializer=JSONSerializer)
        assert worker.work(burst=True)
        assert q.status(job_id) == JobStatus.SUCCESS
        assert q.result(job_id) == 11


async def test_our_worker_in_rq_info(real_redis_url: str, real_conn: syncredis.Redis) -> None:
    conn = real_conn
    settings = Settings(redis_url=real_redis_url)
    async with Worker(["default", "high"], redis=real_redis_url, settings=settings, name="ours-1") as worker:
        task = asyncio.create_task(worker.run())
        seen = {w.name: w for w in rq.Worker.all(connection=conn)}
        assert "ours-1" in seen
        assert [qq.name for qq in seen["ours-1"].queues] == ["default", "high"]
        assert seen["ours-1"].birth_date is not None
        assert rq.Worker.count(connection=conn) == 1
        proc = await asyncio.to_thread(rq_cli, "info", url=real_redis_url)
        assert proc.returncode == 0, proc.stderr
        assert "ours-1" in proc.stdout
        worker.request_stop()
        await task
    assert "ours-1" not in {w.name for w in rq.Worker.all(connection=conn)}


async def test_rq_requeue_of_a_job_we_failed(
    redis_url: str, wsettings: Settings, conn: syncredis.Redis, tmp_path: Path
) -> None:
    counter = str(tmp_path / "n")
    async with TaskQueue(redis_url, settings=wsettings) as q:
        job_id = await q.enqueue(jobs.fail_until, args=(counter, 2))
        await run_burst(redis=redis_url, settings=wsettings)
        assert await q.status(job_id) == JobStatus.FAILED
        FailedJobRegistry("default", connection=conn, serializer=JSONSerializer).requeue(job_id)
        assert await q.status(job_id) == JobStatus.QUEUED
        await run_burst(redis=redis_url, settings=wsettings)
        assert await q.result(job_id) == 2


async def test_rq_maintenance_never_fails_our_long_jobs(
    real_redis_url: str, real_conn: syncredis.Redis, tmp_path: Path
) -> None:
    conn = real_conn
    settings = Settings(redis_url=real_redis_url)
    flag, release = tmp_path / "running", tmp_path / "release"
    async with (
        TaskQueue(real_redis_url, settings=settings) as q,
        Worker(redis=real_redis_url, settings=settings, heartbeat_interval=0.3, lease=2) as worker,
    ):
        task = asyncio.create_task(worker.run())
        try:
            # the job runs until the test releases it (not for a fixed time: a slow machine's rq
            # processes must not outlast it)
            job_id = await q.enqueue(jobs.touch_and_wait, args=(str(flag), str(release)))
            await eventually(flag.exists, what="the job to start")
            started = time.monotonic()
            # While it runs, a stock rq worker starts on the same queue (its startup maintenance cleans
            # registries and sweeps the intermediate queue), `rq info` runs, and registries are cleaned
            # well after the 2 s lease would have lapsed without heartbeats.
            rounds = 0
            while time.monotonic() - started < 3.5 or rounds < 2:  # past the 2 s lease
                rounds += 1
                proc = await asyncio.to_thread(rq_cli, "worker", "--burst", "other-queue", url=real_redis_url)
                assert proc.returncode == 0, proc.stderr
                info = await asyncio.to_thread(rq_cli, "info", url=real_redis_url)
                assert info.returncode == 0, info.stderr
                rq.registry.clean_registries(Queue("default", connection=conn))
                assert await q.status(job_id) == JobStatus.RUNNING
            release.touch()
            assert await q.result(job_id, wait=30) == "released"
        finally:
            release.touch()
            worker.request_stop()
            await asyncio.wait_for(task, 60)


async def test_rq_side_cancel_and_stop_job(
    redis_url: str, wsettings: Settings, conn: syncredis.Redis, tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    async with (
        TaskQueue(redis_url, settings=wsettings) as q,
        Worker(redis=redis_url, settings=wsettings, heartbeat_interval=0.2, lease=5) as worker,
    ):
        task = asyncio.create_task(worker.run())
        a = await q.enqueue(jobs.async_touch_and_sleep, args=(str(one), 60))
        b = await q.enqueue(jobs.async_touch_and_sleep, args=(str(two), 60))
        await eventually(lambda: one.exists() and two.exists(), what="both jobs to start")
        Job.fetch(a, connection=conn, serializer=JSONSerializer).cancel()  # RQ's cancel: noticed by heartbeat
        send_stop_job_command(conn, b, serializer=JSONSerializer)  # RQ's stop-job command over pub/sub
        await eventually(lambda: not worker.running_jobs, what="both jobs to stop")
        assert await q.status(a) == JobStatus.CANCELLED
        assert await q.status(b) == JobStatus.CANCELLED
        stopped = Job.fetch(b, connection=conn, serializer=JSONSerializer)
        assert stopped.get_status() == rq.job.JobStatus.STOPPED
        assert "stopped" in (stopped.latest_result().exc_string or "")  # type: ignore[union-attr]
        worker.request_stop()
        await task


async def test_rq_dependents_run_after_parent(
    redis_url: str, wsettings: Settings, conn: syncredis.Redis
) -> None:
    q = Queue("default", connection=conn, serializer=JSONSerializer)
    parent = q.enqueue(jobs.add, 1, 2)
    child = q.enqueue(jobs.add, 3, 4, depends_on=parent)
    assert child.get_status() == rq.job.JobStatus.DEFERRED
    await run_burst(redis=redis_url, settings=wsettings)
    assert Job.fetch(parent.id, connection=conn, serializer=JSONSerializer).return_value() == 3
    fetched = Job.fetch(child.id, connection=conn, serializer=JSONSerializer)
    assert fetched.get_status() == rq.job.JobStatus.FINISHED
    assert fetched.return_value() == 7


async def test_lifecycle_records_of_rq_jobs_name_the_function(
    redis_url: str, wsettings: Settings, conn: syncredis.Redis
) -> None:
    """A job RQ enqueued has no function path of ours: its 'started' and outcome records both name the
    function from its description (the outcome's read by finish.lua, not taken from the claim)."""
    q = Queue("default", connection=conn, serializer=JSONSerializer)
    job = q.enqueue(jobs.add, 1, 2)
    bad = q.enqueue(jobs.fail, "nope")
    await run_burst(redis=redis_url, settings=wsettings)
    records = [LifecycleRecord.decode(f) for _, f in conn.xrange(lifecycle_stream("rq"))]
    mine = [(r.kind, r.function, r.attempt) for r in records if r.job_id == job.id]
    assert mine == [("started", "tests.jobs.add", 1), ("success", "tests.jobs.add", 1)]
    failed = [(r.kind, r.function) for r in records if r.job_id == bad.id]
    assert failed == [("started", "tests.jobs.fail"), ("failed", "tests.jobs.fail")]


async def test_rq_worker_commands_stop_execution_kill_horse_shutdown(
    redis_url: str, wsettings: Settings, conn: syncredis.Redis, tmp_path: Path
) -> None:
    """RQ's pub/sub worker commands, sent by rq itself: each does what RQ's own worker does with it."""
    from rq.command import send_command, send_kill_horse_command, send_shutdown_command

    one, two = tmp_path / "one", tmp_path / "two"
    async with (
        TaskQueue(redis_url, settings=wsettings) as q,
        Worker(redis=redis_url, settings=wsettings, concurrency=4, heartbeat_interval=0.2, lease=5) as worker,
    ):
        task = asyncio.create_task(worker.run())
        try:
            channel = f"rq:pubsub:{worker.name}"
            await eventually(lambda: dict(conn.pubsub_numsub(channel)).get(channel.encode()), what="listener")
            a = await q.enqueue(jobs.async_touch_and_sleep, args=(str(one), 60))
            b = await q.enqueue(jobs.async_touch_and_sleep, args=(str(two), 60))
            await eventually(lambda: one.exists() and two.exists(), what="both jobs to start")
            (exec_a,) = [e.decode() for e in conn.zrange(f"rq:executions:{a}", 0, -1)]
            # stop-execution names one execution: another id stops nothing, the right one stops only it
            send_command(conn, worker.name, "stop-execution", job_id=a, execution_id="0" * 32)
            send_command(conn, worker.name, "stop-execution", job_id=a, execution_id=exec_a)
            await eventually(lambda: worker.running_jobs == [b], what="the one execution to stop")
            assert await q.status(a) == JobStatus.CANCELLED
            assert await q.status(b) == JobStatus.RUNNING
            # kill-horse stops what is running; the worker itself goes on
            send_kill_horse_command(conn, worker.name)
            await eventually(lambda: not worker.running_jobs, what="kill-horse to stop the running job")
            assert await q.status(b) == JobStatus.CANCELLED
            assert not task.done()
            assert await q.result(await q.enqueue(jobs.add, args=(1, 2)), wait=30) == 3
            # shutdown: the worker's run ends (as RQ's worker does, it then leaves RQ's registry)
            key = f"rq:worker:{worker.name}".encode()
            assert key in conn.smembers("rq:workers")
            send_shutdown_command(conn, worker.name)
            await asyncio.wait_for(task, 30)
        finally:
            worker.request_stop()
            await asyncio.wait_for(task, 30)
    assert key not in conn.smembers("rq:workers")
