"""A complete history with real processes on redis-server and PostgreSQL, every execution counted outside
the system (each job appends a line to a file):

* a worker draining jobs with ``--history`` leaves one correct row per job, nothing lost;
* a stream capped by ``ASYNCSCHED_LIFECYCLE_MAXLEN`` while no Recorder runs: the loss is counted exactly
  (lost + recorded = records written) and no row stays open;
* Redis restarting without persistence: the loss is reported once, rows of vanished jobs end ``unknown``
  within one lease period, and a job that finishes while its hash is gone is still recorded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from asyncsched import _keys
from asyncsched.config import Settings
from asyncsched.queue import TaskQueue
from asyncsched.store import Database, ExecutionRepository, Recorder, TaskExecution
from asyncsched.store._history_loss import history_loss
from tests.servers import RedisServer
from tests.waiting import eventually

from . import historyjobs, procs

pytestmark = pytest.mark.slow

OPEN = ("scheduled", "deferred", "queued", "running")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _enqueue(url: str, path: Path, n: int, settings: Settings) -> None:
    async with TaskQueue(url, settings=settings) as queue:
        for start in range(0, n, 1000):
            await queue.enqueue_many(
                [
                    {"func": historyjobs.logged, "args": (str(path), i)}
                    for i in range(start, min(n, start + 1000))
                ]
            )


async def _by_status(db: Database) -> dict[str, int]:
    return await ExecutionRepository(db).counts()


def _worker(url: str, db_url: str, log: Path, *extra: str, env: dict[str, str] | None = None) -> procs.Proc:
    args = [
        "--redis-url",
        url,
        "--database-url",
        db_url,
        "--log-level",
        "WARNING",
        "worker",
        "--burst",
        *extra,
    ]
    return procs.Proc(args, log, env=env)


async def test_worker_with_history_records_every_job_once(
    own_redis: RedisServer, real_database_url: str, tmp_path: Path
) -> None:
    n = 10_000
    url, done = own_redis.url, tmp_path / "done.txt"
    settings = Settings(redis_url=url, database_url=real_database_url)
    async with Database(real_database_url, settings=settings) as db:
        await db.migrate()
        await _enqueue(url, done, n, settings)
        worker = _worker(url, real_database_url, tmp_path / "w.log", "--history", "-c", "100")
        try:
            assert await asyncio.to_thread(worker.wait, 300) == 0, worker.log()
        finally:
            worker.stop()
        assert sorted(map(int, _lines(done))) == list(range(n))  # each job ran exactly once
        async with Recorder(url, db=db, settings=settings, consumer="check") as rec:  # what is left, if any
            await rec.flush()
            assert await rec.backlog() == dict.fromkeys(rec.streams, 0)
        async with db.engine.connect() as conn:
            complete = await conn.scalar(
                select(func.count()).where(
                    TaskExecution.status == "success",
                    TaskExecution.ended_at.is_not(None),
                    TaskExecution.duration.is_not(None),
                )
            )
        assert complete == n
        assert await _by_status(db) == {"success": n}
        async with TaskQueue(url, settings=settings) as q:
            assert (await history_loss(q.redis, "rq")).lost == 0


async def test_capped_stream_loss_is_exact_and_no_row_stays_open(
    own_redis: RedisServer, real_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """2,000 jobs (6,000 records) into a stream capped at 1,000, no Recorder reading while they are enqueued
    and drained: the Recorder counts exactly what it could not read and closes every row it could not
    complete (queued rows whose later records were dropped end ``unknown``)."""
    n, cap = 2_000, 1_000
    url, done = own_redis.url, tmp_path / "done.txt"
    settings = Settings(redis_url=url, database_url=real_database_url, lifecycle_maxlen=cap)
    env = {"ASYNCSCHED_LIFECYCLE_MAXLEN": str(cap)}
    async with Database(real_database_url, settings=settings) as db:
        await db.migrate()
        rec = Recorder(url, db=db, settings=settings, consumer="r", reconcile_age=0.0, reconcile_interval=0.2)
        await rec.flush()  # the group exists from the start: every record after it is the Recorder's
        await _enqueue(url, done, n, settings)
        assert 0 < await rec.flush() < n  # the queued records the cap kept: queued rows
        worker = _worker(url, real_database_url, tmp_path / "w.log", env=env)
        try:
            assert await asyncio.to_thread(worker.wait, 300) == 0, worker.log()
        finally:
            worker.stop()
        assert sorted(map(int, _lines(done))) == list(range(n))
        with caplog.at_level(logging.WARNING, logger="asyncsched.store.recorder"):
            async with rec:
                await rec.flush()
                lost = (await history_loss(rec.redis, "rq")).lost
                assert lost > 0
                assert lost + rec.recorded == 3 * n  # exact: every record is recorded or counted

                async def closed() -> bool:
                    counts = await _by_status(db)
                    return not any(counts.get(s) for s in OPEN)

                await eventually(closed, 30, "every open execution to be reconciled")
                assert await rec.backlog() == dict.fromkeys(rec.streams, 0)
        counts = await _by_status(db)
        assert set(counts) <= {"success", "unknown"}
        assert counts.get("unknown", 0) > 0
        lines = [r.getMessage() for r in caplog.records if "history lost" in r.getMessage()]
        assert len(lines) == 1  # one line for the whole loss, not one per record
        assert f"{lost} lifecycle records" in lines[0]


async def test_redis_wipe_is_reported_and_reconciled(
    own_redis: RedisServer, real_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, done = own_redis.url, tmp_path / "done.txt"
    settings = Settings(redis_url=url, database_url=real_database_url)
    async with Database(real_database_url, settings=settings) as db:
        await db.migrate()
        rec = Recorder(
            url, db=db, settings=settings, consumer="r", reconcile_age=0.0, reconcile_interval=0.5,
            trim_interval=0.2, max_backoff=0.2, flush_interval=0.05,
        )  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="asyncsched.store.recorder"):
            async with rec:
                async with TaskQueue(url, settings=settings) as q:
                    waiting = [
                        await q.enqueue(historyjobs.logged, args=(str(done), i), queue="idle")
                        for i in range(20)
                    ]
                    long_job = await q.enqueue(historyjobs.logged_sleep, args=(str(done), 99, 12.0))
                worker = procs.worker(url, tmp_path / "w.log", "--lease", "30", "--heartbeat-interval", "1")
                try:
                    await eventually(lambda: "started 99" in _lines_text(done), 30, "the long job to start")

                    async def recorded() -> bool:
                        counts = await _by_status(db)
                        return counts.get("queued") == 20 and counts.get("running") == 1

                    await eventually(recorded, 30, "the open executions to be recorded")
                    assert "99" not in _lines(done)  # the long job is still running
                    await asyncio.to_thread(own_redis.restart)  # no persistence: everything is gone

                    async def reconciled() -> bool:
                        return (await _by_status(db)).get("unknown") == 21

                    await eventually(reconciled, 20, "the executions of vanished jobs to be marked unknown")

                    async def long_job_recorded() -> bool:
                        return (await ExecutionRepository(db).get(long_job)).status == "success"

                    await eventually(long_job_recorded, 40, "the job that finished without its hash")
                finally:
                    worker.stop()
        assert "99" in _lines(done)
        wipes = [r.getMessage() for r in caplog.records if "LOST ITS DATA" in r.getMessage()]
        assert len(wipes) == 1
        assert "20 queued" in wipes[0]
        assert "1 running" in wipes[0]
        repo = ExecutionRepository(db)
        row = await repo.get(waiting[0])
        assert row.status == "unknown"
        assert row.error is not None
        assert "no longer exists in Redis" in row.error
        assert not os.path.exists(_keys.lifecycle_stream("rq"))  # (a key name, never a file)


def _lines_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""
