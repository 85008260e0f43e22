"""A real database outage: PostgreSQL is stopped while jobs run, started again, and the history is whole."""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy import func, select

from asyncsched._redis import create_redis
from asyncsched.config import Settings
from asyncsched.store import Database, ExecutionRepository, Recorder, TaskExecution

from ..servers import PostgresServer
from .helpers import emit, lifecycle, wait_until


async def _create_db(server: PostgresServer) -> str:
    conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="asyncsched", database="postgres")
    try:
        await conn.execute('CREATE DATABASE "outage"')
    finally:
        await conn.close()
    return server.url("outage")


async def test_postgres_outage_loses_and_duplicates_nothing(
    own_postgres: PostgresServer, real_redis_url: str
) -> None:
    url = await _create_db(own_postgres)
    redis: aioredis.Redis = create_redis(real_redis_url)
    jobs = {phase: [f"{phase}-{i}" for i in range(40)] for phase in ("before", "during", "after", "inflight")}
    try:
        async with Database(url, auto_migrate=True) as db:
            repo = ExecutionRepository(db)
            recorder = Recorder(
                redis, db=db, settings=Settings(), consumer="outage", batch_size=25, flush_interval=0.05,
                max_backoff=0.3,
            )  # fmt: skip
            async with recorder:
                for job in jobs["before"]:
                    await emit(redis, *lifecycle(job).values())
                for job in jobs["inflight"]:  # running when the database goes away
                    recs = lifecycle(job)
                    await emit(redis, recs["queued"], recs["started"])

                async def caught_up(n: int) -> bool:
                    return recorder.recorded >= n

                await wait_until(lambda: caught_up(200), what="the records before the outage")

                await asyncio.to_thread(own_postgres.stop)
                for job in jobs["during"]:  # producers do not wait on SQL
                    await emit(redis, *lifecycle(job).values())
                for job in jobs["inflight"]:
                    await emit(redis, lifecycle(job)["success"])

                async def failing() -> bool:
                    return recorder.failures >= 2

                await wait_until(failing, what="the recorder to notice the outage")
                assert recorder.recorded < 200 + 160  # nothing written while the server is down
                await asyncio.to_thread(own_postgres.start)

                for job in jobs["after"]:
                    await emit(redis, *lifecycle(job).values())
                await wait_until(lambda: caught_up(200 + 160 + 120), timeout=60, what="the backlog to drain")
                assert await recorder.backlog() == dict.fromkeys(recorder.streams, 0)

            async with db.session() as s:
                assert await s.scalar(select(func.count()).select_from(TaskExecution)) == 160
                per_job = await s.execute(
                    select(TaskExecution.job_id, func.count()).group_by(TaskExecution.job_id)
                )
                assert dict(per_job.all()) == {j: 1 for js in jobs.values() for j in js}
            page = await repo.list(limit=1000)
            assert {r.status for r in page.items} == {"success"}
            assert all(r.duration is not None and r.enqueued_at is not None for r in page.items)
    finally:
        await redis.aclose()
