"""Scenario 4: PostgreSQL stops while the scheduler runs. Ticks keep firing from the Redis index; the run
times (last_run_at / next_run_at) wait in memory and reach SQL once the database is back."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import select

from asyncsched.config import Settings
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.scheduler import TaskScheduler
from asyncsched.store import Database, ScheduledTask
from tests.servers import PostgresServer
from tests.waiting import eventually

pytestmark = pytest.mark.slow


async def test_scheduler_fires_through_a_database_outage(
    own_postgres: PostgresServer, real_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1", port=own_postgres.port, user="asyncsched", database="postgres"
    )
    try:
        await conn.execute('CREATE DATABASE "sched"')
    finally:
        await conn.close()
    url = own_postgres.url("sched")
    settings = Settings(redis_url=real_redis_url, database_url=url)
    caplog.set_level(logging.INFO, logger="asyncsched.scheduler")
    async with (
        Database(url, auto_migrate=True) as db,
        TaskScheduler(real_redis_url, settings=settings, db=db) as scheduler,
        TaskQueue(real_redis_url, settings=settings) as q,
    ):
        task = await scheduler.register_task(
            name="tick", agent_name="chaos", type="interval", schedule="1 second",
            function="tests.chaos.chaosjobs:ok",
            overlap="allow",  # no worker runs the jobs: every tick must enqueue, not skip a queued run
        )  # fmt: skip
        runner = asyncio.create_task(scheduler.run())
        try:

            async def fired() -> int:
                return len(await q.list_jobs(status=JobStatus.QUEUED, limit=1000))

            await eventually(fired, 30, "a first tick")
            await asyncio.to_thread(own_postgres.stop)
            stopped_at = datetime.now(UTC)
            before = await fired()

            async def fires_without_sql() -> bool:
                return await fired() >= before + 3

            await eventually(fires_without_sql, 30, "ticks to keep firing while PostgreSQL is down")
            assert not runner.done()
            await asyncio.to_thread(own_postgres.start)
            fired_total = await fired()

            async def sql_caught_up() -> bool:
                try:
                    async with db.session() as session:
                        row = await session.execute(select(ScheduledTask).where(ScheduledTask.id == task.id))
                        stored = row.scalar_one()
                except Exception:
                    return False
                return stored.last_run_at is not None and stored.last_run_at > stopped_at

            await eventually(sql_caught_up, 60, "last_run_at to reach SQL after the outage")
            assert not runner.done()
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        ids = [rec.id for rec in await q.list_jobs(status=JobStatus.QUEUED, limit=1000)]
        assert len(ids) == len(set(ids)) >= fired_total
    sql_lines = [r for r in caplog.records if "SQL" in r.getMessage()]
    assert sum(r.exc_info is not None for r in caplog.records) <= 1, [r.getMessage() for r in caplog.records]
    assert len(sql_lines) <= 4, [r.getMessage() for r in sql_lines]  # a line per outage, not one a second
