"""The queue and the worker on a Redis Cluster: a job's full path over three queues spread over the three
masters (history rows in SQL included), what is refused there, and the per-queue key layout."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from asyncsched._keys import claiming_list, claiming_registry, lifecycle_stream
from asyncsched._lifecycle import LifecycleRecord
from asyncsched._redis import create_redis
from asyncsched.config import Settings
from asyncsched.events import EventBus, PublisherLanes, open_publisher
from asyncsched.exceptions import ClusterUnsupported, InvalidJob, JobError, JobNotFound
from asyncsched.queue import JobStatus, RateLimit, Retry, TaskQueue
from asyncsched.queue._limits import Limit
from asyncsched.rq.keys import RQKeys
from asyncsched.store import Database, ExecutionRepository, RecorderLanes, TaskExecution, open_recorder
from asyncsched.testing import run_burst
from asyncsched.worker import Worker
from tests import jobs
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
QUEUES = ["alpha", "delta", "beta"]  # slots 865, 9053, 15419: one per master


def _slot_owner(client: aioredis.Redis, key: str) -> str:
    node = client.get_node_from_key(key)  # type: ignore[attr-defined]
    return str(node.name)


def _spawn_worker(url: str, cwd: Path, *queues: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "asyncsched.worker", "--redis-url", url, "--lease", "2", "--no-scheduler"]
    cmd += ["--no-history", "--no-events", "--heartbeat-interval", "0.5", *queues]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _is(queue: TaskQueue, job_id: str, status: JobStatus) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await queue.status(job_id) == status

    return check


@pytest.fixture
def csettings(cluster_url: str) -> Settings:
    return Settings(redis_url=cluster_url, queues=QUEUES)


@pytest.fixture
async def history(
    cluster_url: str, csettings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[Database, TaskQueue]]:
    """A history database (SQLite) and a queue on the cluster."""
    async with (
        Database(f"sqlite+aiosqlite:///{tmp_path}/h.db", auto_migrate=True) as db,
        TaskQueue(cluster_url, settings=csettings) as queue,
    ):
        yield db, queue


async def test_three_queues_live_on_three_masters(cluster_url: str) -> None:
    client = create_redis(cluster_url)
    await client.initialize()  # type: ignore[attr-defined]
    keys = RQKeys("rq", cluster=True)
    owners = {_slot_owner(client, keys.queue(q)) for q in QUEUES}
    await client.aclose()
    assert len(owners) == 3  # the test below crosses every master


async def test_a_jobs_full_path_over_three_queues_with_history(
    cluster_url: str, csettings: Settings, tmp_path: Path
) -> None:
    async with (
        Database(f"sqlite+aiosqlite:///{tmp_path}/h.db", auto_migrate=True) as db,
        TaskQueue(cluster_url, settings=csettings, name="alpha") as queue,
    ):
        recorder = open_recorder(queue.redis, db=db, settings=csettings, flush_interval=0.05)
        assert isinstance(recorder, RecorderLanes)
        async with recorder:
            ids = [await queue.enqueue(jobs.add, args=(n, 1), queue=q) for n, q in enumerate(QUEUES)]
            ids += await queue.enqueue_many(
                [{"func": jobs.add, "args": (10, n), "queue": q} for n, q in enumerate(QUEUES)]
            )
            failing = await queue.enqueue(jobs.fail, args=("kaput",), queue="beta")
            for job_id, q in zip(ids, QUEUES * 2, strict=True):
                assert job_id.startswith("{" + q + "}")
            worker = await run_burst(QUEUES, redis=cluster_url, settings=csettings)
            assert worker.processed == 7
            assert [await queue.result(i) for i in ids] == [1, 2, 3, 10, 11, 12]
            with pytest.raises(JobError, match="kaput"):
                await queue.result(failing)
            rec = await queue.job(ids[1])
            assert (rec.queue, rec.worker_name, rec.status) == ("delta", worker.name, JobStatus.SUCCESS)
            # each queue's lifecycle records in its own stream, in its slot
            for job_id, q in zip(ids[:3], QUEUES, strict=True):
                entries = await queue.redis.xrange(lifecycle_stream("rq", "{" + q + "}", cluster=True))
                kinds = [LifecycleRecord.decode(f).kind for _, f in entries]
                assert kinds.count("success") == 2
                assert job_id in {LifecycleRecord.decode(f).job_id for _, f in entries}

            async def recorded() -> bool:
                await recorder.flush()
                async with db.session() as s:
                    rows = (await s.execute(select(TaskExecution))).scalars().all()
                return len([r for r in rows if r.status in ("success", "failed")]) == 7

            await eventually(recorded, timeout=20, what="every execution recorded in SQL")
            async with db.session() as s:
                rows = {r.job_id: r for r in (await s.execute(select(TaskExecution))).scalars().all()}
            assert rows[failing].status == "failed"
            assert {rows[i].status for i in ids} == {"success"}
            # the history names queues and workers as users know them, not by their tags in Redis
            assert [rows[i].queue for i in ids] == QUEUES * 2
            assert {rows[i].worker_name for i in ids} == {worker.name}
            page = await ExecutionRepository(db).list(queue="delta")
            assert {r.job_id for r in page.items} == {ids[1], ids[4]}
            assert len(recorder.lanes) == 3


async def test_features_spanning_queues_are_refused(cluster_url: str, csettings: Settings) -> None:
    async with TaskQueue(cluster_url, settings=csettings, name="alpha") as queue:
        parent = await queue.enqueue(jobs.add, args=(1, 1), queue="delta")
        with pytest.raises(ClusterUnsupported, match="another queue"):
            await queue.enqueue(jobs.add, args=(1, 2), depends_on=parent)
        for options in ({"rate_limit": "5/m"}, {"rate_limit": RateLimit("k", 1)}, {"max_concurrency": 2}):
            with pytest.raises(ClusterUnsupported, match="Redis Cluster"):
                await queue.enqueue(jobs.add, args=(1, 2), **options)  # type: ignore[arg-type]
        with pytest.raises(JobNotFound, match="starts with its queue's tag"):
            await queue.cancel("plain-id")
        with pytest.raises(InvalidJob, match="RQ's rule"):
            await queue.enqueue(jobs.add, args=(1, 2), job_id="a{b}")
        assert await queue.count_jobs("alpha") == 0  # nothing refused was written
        assert [j.id for j in await queue.list_jobs(queue="delta")] == [parent]
    with pytest.raises(ClusterUnsupported):
        TaskQueue(cluster_url, settings=csettings, limits={"queue:alpha": Limit(max_concurrency=1)})
    with pytest.raises(ClusterUnsupported, match="WAIT"):
        TaskQueue(cluster_url, settings=csettings, wait_replicas=1)


async def test_dependencies_retries_delays_and_given_ids_within_a_queue(
    cluster_url: str, csettings: Settings, tmp_path: Path
) -> None:
    async with TaskQueue(cluster_url, settings=csettings, name="delta") as queue:
        parent = await queue.enqueue(jobs.add, args=(1, 1), job_id="parent-1")
        assert parent == "{delta}parent-1"
        assert await queue.enqueue(jobs.add, args=(1, 1), job_id=parent, unique=True) == parent
        child = await queue.enqueue(jobs.add, args=(2, 2), depends_on=parent)
        assert await queue.status(child) == JobStatus.DEFERRED
        flaky = await queue.enqueue(
            jobs.fail_until, args=(str(tmp_path / "n"), 2), retry=Retry(max=2), queue="beta"
        )
        later = await queue.enqueue(jobs.add, args=(3, 3), delay=timedelta(milliseconds=300), queue="alpha")
        assert await queue.status(later) == JobStatus.SCHEDULED
        async with Worker(QUEUES, redis=cluster_url, settings=csettings, scheduler_interval=0.1) as worker:
            task = asyncio.create_task(worker.run())

            async def done() -> bool:
                return all(
                    [await queue.status(i) == JobStatus.SUCCESS for i in (parent, child, flaky, later)]
                )

            await eventually(done, timeout=20, what="every job to succeed")
            worker.request_stop()
            await task
        assert (await queue.job(flaky)).attempt == 2
        assert await queue.result(child) == 4


async def test_cancel_pause_requeue_and_timeout(
    cluster_url: str, csettings: Settings, tmp_path: Path
) -> None:
    flag = tmp_path / "running"
    async with TaskQueue(cluster_url, settings=csettings, name="beta") as queue:
        running = await queue.enqueue(jobs.async_touch_and_sleep, args=(str(flag), 60))
        slow = await queue.enqueue(jobs.async_sleep, args=(30,), timeout=1, queue="alpha")
        assert await queue.pause("delta")
        assert await queue.paused(["alpha", "delta"]) == {"delta"}
        held = await queue.enqueue(jobs.add, args=(5, 5), queue="delta")
        async with Worker(QUEUES, redis=cluster_url, settings=csettings, heartbeat_interval=0.2) as worker:
            task = asyncio.create_task(worker.run())
            await eventually(flag.exists, timeout=20, what="the job to start")
            assert await queue.cancel(running)  # stopped over the worker's command channel in beta's slot
            await eventually(_is(queue, running, JobStatus.CANCELLED), timeout=20, what="the cancel")
            await eventually(_is(queue, slow, JobStatus.FAILED), timeout=20, what="the timeout")
            assert await queue.status(held) == JobStatus.QUEUED  # paused: untouched
            assert await queue.resume("delta")
            await eventually(_is(queue, held, JobStatus.SUCCESS), timeout=20, what="the resume")
            await queue.requeue(slow)
            assert await queue.status(slow) in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED)
            assert await queue.requeue_failed("alpha") in ([], [slow])
            worker.request_stop()
            await task
        assert (await queue.job(slow)).attempt >= 2
        assert "{alpha}" not in " ".join(await queue.queues())


async def test_sigkilled_workers_job_is_recovered(
    cluster_url: str, csettings: Settings, tmp_path: Path
) -> None:
    flag = tmp_path / "running"
    proc = _spawn_worker(cluster_url, tmp_path, *QUEUES)  # the worker's CLI on a cluster URL
    try:
        async with TaskQueue(cluster_url, settings=csettings) as q:
            job_id = await q.enqueue(jobs.touch_and_sleep, args=(str(flag), 60), queue="delta")
            await eventually(flag.exists, timeout=30, what="the job to start in the worker process")
            assert await q.status(job_id) == JobStatus.RUNNING
            proc.kill()
            proc.wait(10)
            reaper = Worker(
                QUEUES, redis=cluster_url, settings=csettings, orphan_policy="requeue", lease=2,
                heartbeat_interval=1,
            )  # fmt: skip
            async with reaper:
                reaped = await eventually(reaper.reap, timeout=30, what="the lease to lapse")
            assert reaped == [(job_id, "requeued")]
            assert (await q.job(job_id)).attempt == 2
            assert [r.id for r in await q.list_jobs("delta", status=JobStatus.QUEUED)] == [job_id]
    finally:
        proc.kill()
        proc.wait()


async def test_registrations_and_events_per_queue(cluster_url: str, csettings: Settings) -> None:
    async with TaskQueue(cluster_url, settings=csettings) as queue:
        async with Worker(QUEUES, redis=cluster_url, settings=csettings, name="w1") as worker:
            assert [w.name for w in await queue.workers()] == ["w1"]
            assert worker.queues == ["{alpha}", "{delta}", "{beta}"]
            for q in ("{alpha}", "{delta}", "{beta}"):
                assert await queue.redis.hget(claiming_registry("rq", q), q + "w1") == q.encode()
                assert await queue.redis.exists(f"rq:worker:{q}w1")
            await queue.redis.delete("rq:worker:{beta}w1")  # one alias expired (a long stall)
            await worker.leases.heartbeat()
            assert await queue.redis.exists("rq:worker:{beta}w1")
            await queue.redis.delete("rq:worker:w1")  # the registration expired: registered again
            await worker.leases.heartbeat()
            assert [w.name for w in await queue.workers()] == ["w1"]
        assert await queue.workers() == []
        async with EventBus(cluster_url, settings=csettings, agent_name="mailer") as listener:
            publisher = open_publisher(cluster_url, settings=csettings)
            assert isinstance(publisher, PublisherLanes)
            async with publisher:
                ids = [
                    await queue.enqueue(jobs.add, args=(1, 2), queue=q, agent_name="mailer") for q in QUEUES
                ]
                await run_burst(QUEUES, redis=cluster_url, settings=csettings)
                done: dict[str, tuple[str, str]] = {}
                while not set(ids) <= set(done):
                    event = await listener.listen(timeout=15)
                    assert event is not None, f"no event for {set(ids) - set(done)}"
                    if event.event_type == "task.completed":
                        done[event.payload["job_id"]] = (event.payload["queue"], event.payload["worker"])
                # the events name queues and workers as users know them, not by their tags in Redis
                assert sorted(q for q, _ in done.values()) == sorted(QUEUES)
                assert not any(str(w).startswith("{") for _, w in done.values())
                assert len(publisher.lanes) == 3


async def test_ids_left_in_a_claiming_list_go_back_or_are_taken(
    cluster_url: str, csettings: Settings
) -> None:
    async with TaskQueue(cluster_url, settings=csettings) as queue:
        a = await queue.enqueue(jobs.add, args=(1, 1), queue="alpha")
        b = await queue.enqueue(jobs.add, args=(2, 2), queue="beta")
        alpha = queue.keys.queue("alpha")
        claiming = claiming_list("rq", "{alpha}w2")
        async with Worker(QUEUES, redis=cluster_url, settings=csettings, name="w2") as worker:
            # what a BLMOVE moved before it was cancelled (another queue delivered first)
            assert await queue.redis.lmove(alpha, claiming, "LEFT", "RIGHT") == a.encode()
            assert not await worker.claimer.queues_empty()  # a burst worker does not end before taking it
        # stopped without running: the worker's own reap put it back at its queue's head
        assert await queue.redis.lrange(alpha, 0, -1) == [a.encode()]
        assert await queue.redis.llen(claiming) == 0
        await queue.redis.lmove(alpha, claiming_list("rq", "{alpha}w3"), "LEFT", "RIGHT")
        worker = await run_burst(QUEUES, redis=cluster_url, settings=csettings, name="w3")
        assert worker.processed == 2  # the claiming list's id too
        assert [await queue.result(i) for i in (a, b)] == [2, 4]


async def test_recorder_lag_metric_counts_every_queues_stream(
    history: tuple[Database, TaskQueue], csettings: Settings
) -> None:
    from asyncsched._metrics import redis_lines

    db, queue = history
    await queue.enqueue(jobs.add, args=(1, 1), queue="alpha")  # the queue is known: its lane starts
    async with open_recorder(queue.redis, db=db, settings=csettings, flush_interval=0.05) as recorder:
        await recorder.flush()
    for n in range(5):  # recorded by nobody now: the lag is these records in alpha's stream
        await queue.enqueue(jobs.add, args=(n, 1), queue="alpha")
    lines = await redis_lines(queue.redis, csettings.key_prefix)
    assert "asyncsched_recorder_lag_entries 5" in lines


async def test_reconciler_waits_for_the_queues_stream_before_marking_a_job_lost(
    history: tuple[Database, TaskQueue], cluster_url: str, csettings: Settings
) -> None:
    db, queue = history
    recorder = open_recorder(queue.redis, db=db, settings=csettings, flush_interval=0.05, reconcile_age=0)
    assert isinstance(recorder, RecorderLanes)
    job = await queue.enqueue(jobs.add, args=(1, 1), queue="alpha")
    async with recorder:
        await recorder.flush()
    assert (await ExecutionRepository(db).get(job)).status == "queued"
    # the job runs while nobody records: its outcome waits unread in alpha's stream; then its hash goes
    await run_burst(["alpha"], redis=cluster_url, settings=csettings)
    await queue.redis.delete(f"rq:job:{job}")
    for _ in range(2):  # a pass finds it gone; the next would mark it once alpha's stream is read
        await recorder.main.reconciler.run_once()
    assert (await ExecutionRepository(db).get(job)).status == "queued"  # not marked lost
    async with recorder:
        await recorder.flush()
    assert (await ExecutionRepository(db).get(job)).status == "success"


async def test_open_recorder_takes_the_main_recorders_options_on_a_cluster(
    history: tuple[Database, TaskQueue], csettings: Settings
) -> None:
    # the lanes are made with the same options; those that are the main Recorder's alone used to be given
    # twice to a lane (TypeError, raised in the background discovery: no lane, nothing recorded)
    db, queue = history
    job = await queue.enqueue(jobs.add, args=(1, 1), queue="alpha")
    options = {"reconcile_interval": 0.2, "prune_interval": 5.0, "retention": False, "events": False}
    recorder = open_recorder(queue.redis, db=db, settings=csettings, flush_interval=0.05, **options)
    assert isinstance(recorder, RecorderLanes)
    async with recorder:
        await recorder.flush()
        assert len(recorder.lanes) == 3
    assert (await ExecutionRepository(db).get(job)).status == "queued"
