"""The Recorder: lifecycle records and events to SQL in batches, merged by rank, never lost or duplicated."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from asyncsched import _keys
from asyncsched._lifecycle import RESULT_CAP, Lifecycle, LifecycleRecord
from asyncsched._redis import is_cluster
from asyncsched.config import Settings
from asyncsched.store import (
    Database,
    EventMessage,
    EventRepository,
    ExecutionRepository,
    Recorder,
    ScheduledTask,
    TaskExecution,
)
from asyncsched.store._history_rows import ExecutionRow
from asyncsched.store._recorder import GROUP

from ..servers import RedisServer
from .helpers import T0, emit, emit_earlier, lifecycle, wait_until

pytestmark = pytest.mark.cluster  # the Recorder runs on a Redis Cluster too


def _recorder(redis: aioredis.Redis, db: Database, **options: Any) -> Recorder:
    options.setdefault("consumer", "test")
    return Recorder(redis, db=db, settings=Settings(), **options)


async def _count(db: Database, model: Any = TaskExecution) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def test_lifecycle_of_a_job_becomes_one_execution(redis: aioredis.Redis, db: Database) -> None:
    recs = lifecycle("job-1", agent_name="mail", task_name="digest", function="app.mail:digest")
    await emit(redis, recs["queued"], recs["started"], recs["success"])
    rec = _recorder(redis, db)
    assert await rec.flush() == 3
    row = await ExecutionRepository(db).get("job-1")
    assert (row.job_id, row.attempt, row.status) == ("job-1", 1, "success")
    assert (row.agent_name, row.task_name, row.function, row.queue) == (
        "mail",
        "digest",
        "app.mail:digest",
        "default",
    )
    assert row.worker_name == "w1"
    assert row.enqueued_at == datetime.fromtimestamp(T0, UTC)
    assert row.started_at == datetime.fromtimestamp(T0 + 1, UTC)
    assert row.ended_at == datetime.fromtimestamp(T0 + 3.5, UTC)
    assert row.duration == pytest.approx(2.5)
    assert row.result == {"ok": 1}
    assert row.created_at == row.enqueued_at  # earliest known time of the attempt
    assert await rec.flush() == 0
    assert (await redis.xpending(_keys.lifecycle_stream("rq", cluster=is_cluster(redis)), GROUP))[
        "pending"
    ] == 0


async def test_records_of_the_earlier_format_are_recorded_and_merge_with_packed_ones(
    redis: aioredis.Redis, db: Database
) -> None:
    """After an upgrade the stream still holds records the previous version wrote (one stream field per
    field): they are recorded as before, and merge with the packed records of the same executions."""
    mixed = lifecycle("job-mixed", agent_name="mail", task_name="digest", function="app.mail:digest")
    earlier = lifecycle("job-earlier", agent_name="mail", task_name="digest", function="app.mail:digest")
    await emit_earlier(redis, mixed["queued"], *earlier.values())
    await emit(redis, mixed["started"], mixed["success"])
    rec = _recorder(redis, db)
    assert await rec.flush() == 6
    for job_id in ("job-mixed", "job-earlier"):
        row = await ExecutionRepository(db).get(job_id)
        assert (row.status, row.attempt, row.queue, row.worker_name) == ("success", 1, "default", "w1")
        assert (row.agent_name, row.task_name, row.function) == ("mail", "digest", "app.mail:digest")
        assert row.enqueued_at == datetime.fromtimestamp(T0, UTC)
        assert row.ended_at == datetime.fromtimestamp(T0 + 3.5, UTC)
        assert (row.duration, row.result) == (pytest.approx(2.5), {"ok": 1})
    assert await _count(db) == 2


async def test_out_of_order_batches_never_move_a_state_back(redis: aioredis.Redis, db: Database) -> None:
    recs = lifecycle("job-2")
    rec = _recorder(redis, db)
    await emit(redis, recs["success"])
    await rec.flush()
    await emit(redis, recs["started"])
    await emit(redis, recs["queued"])
    await rec.flush()
    row = await ExecutionRepository(db).get("job-2")
    assert row.status == "success"
    assert row.enqueued_at == datetime.fromtimestamp(T0, UTC)  # filled in by the earlier record
    assert row.duration == pytest.approx(2.5)
    assert await _count(db) == 1


async def test_duration_when_start_and_end_arrive_in_different_batches(
    redis: aioredis.Redis, db: Database
) -> None:
    rec = _recorder(redis, db)
    await emit(redis, LifecycleRecord(Lifecycle.STARTED, "job-3", "default", started_at=T0))
    await rec.flush()
    assert (await ExecutionRepository(db).get("job-3")).status == "running"
    await emit(redis, LifecycleRecord(Lifecycle.FAILED, "job-3", "default", ended_at=T0 + 4, error="E: x"))
    await rec.flush()
    row = await ExecutionRepository(db).get("job-3")
    assert (row.status, row.error, row.duration) == ("failed", "E: x", pytest.approx(4.0))


async def test_retries_are_one_row_per_attempt(redis: aioredis.Redis, db: Database) -> None:
    first = LifecycleRecord(
        Lifecycle.RETRY, "job-4", "default", attempt=1, error="ValueError: no", traceback="Traceback..."
    )
    second = lifecycle("job-4", attempt=2)
    await emit(redis, first, second["queued"], second["started"], second["success"])
    await _recorder(redis, db).flush()
    attempts = await ExecutionRepository(db).attempts("job-4")
    assert [(a.attempt, a.status) for a in attempts] == [(1, "failed"), (2, "success")]
    assert attempts[0].traceback == "Traceback..."
    assert (await ExecutionRepository(db).get("job-4")).attempt == 2  # a job id gives the latest attempt


async def test_cancel_wins_and_statuses_map(redis: aioredis.Redis, db: Database) -> None:
    await emit(
        redis,
        LifecycleRecord(Lifecycle.SCHEDULED, "s", "default"),
        LifecycleRecord(Lifecycle.DEFERRED, "d", "default"),
        LifecycleRecord(Lifecycle.QUEUED, "c", "default"),
        LifecycleRecord(Lifecycle.CANCELLED, "c", "default"),
        LifecycleRecord(Lifecycle.QUEUED, "c", "default"),
    )
    await _recorder(redis, db).flush()
    repo = ExecutionRepository(db)
    assert [(await repo.get(j)).status for j in ("s", "d", "c")] == ["scheduled", "deferred", "cancelled"]


async def test_replayed_entries_change_nothing(redis: aioredis.Redis, db: Database) -> None:
    """A commit whose XACK was lost: the same entries are delivered again and merge into the same rows."""
    recs = lifecycle("job-5")
    await emit(redis, *recs.values())
    rec = _recorder(redis, db)
    await rec.flush()
    before = await ExecutionRepository(db).get("job-5")
    await redis.xgroup_setid(
        _keys.lifecycle_stream("rq", cluster=is_cluster(redis)), GROUP, "0"
    )  # redeliver everything
    assert await rec.flush() == 3
    after = await ExecutionRepository(db).get("job-5")
    assert await _count(db) == 1
    assert (after.id, after.status, after.duration, after.created_at) == (
        before.id,
        before.status,
        before.duration,
        before.created_at,
    )


async def test_scheduled_task_link_only_when_the_task_exists(redis: aioredis.Redis, db: Database) -> None:
    task = ScheduledTask(agent_name="a", name="t", type="interval", schedule="5 minutes", function="m:f")
    async with db.session() as s, s.begin():
        s.add(task)
    await emit(
        redis,
        LifecycleRecord(Lifecycle.QUEUED, "linked", "default", scheduled_task_id=task.id),
        LifecycleRecord(Lifecycle.QUEUED, "orphan", "default", scheduled_task_id="f" * 32),
    )
    await _recorder(redis, db).flush()
    repo = ExecutionRepository(db)
    assert (await repo.get("linked")).scheduled_task_id == task.id
    assert (await repo.get("orphan")).scheduled_task_id is None
    assert (await repo.list(task_id=task.id)).total == 1


async def test_large_results_and_long_fields_are_capped(redis: aioredis.Redis, db: Database) -> None:
    big = json.dumps({"x": "y" * (RESULT_CAP * 2)})
    await emit(
        redis,
        LifecycleRecord(Lifecycle.SUCCESS, "big", "default", result=big, worker="w" * 500),
        LifecycleRecord(Lifecycle.SUCCESS, "text", "default", result="not json"),
    )
    await _recorder(redis, db).flush()
    row = await ExecutionRepository(db).get("big")
    assert row.result["truncated"] is True
    assert len(row.worker_name or "") == 200
    assert (await ExecutionRepository(db).get("text")).result == "not json"


async def test_malformed_and_trimmed_entries_are_skipped(redis: aioredis.Redis, db: Database) -> None:
    stream = _keys.lifecycle_stream("rq", cluster=is_cluster(redis))
    await redis.xadd(stream, {"kind": "exploded", "job_id": "x", "queue": "q"})
    await redis.xadd(stream, {"job_id": "no-kind"})
    await emit(redis, LifecycleRecord(Lifecycle.QUEUED, "fine", "default"))
    rec = _recorder(redis, db)
    assert await rec.flush() == 3
    assert await _count(db) == 1
    assert (await redis.xpending(stream, GROUP))["pending"] == 0


async def test_event_log_becomes_event_messages_once(redis: aioredis.Redis, db: Database) -> None:
    stream = _keys.event_log_stream("rq", cluster=is_cluster(redis))
    fields = {
        "id": "e" * 32,
        "event_type": "task.completed",
        "source_agent": "mail",
        "payload": json.dumps({"job_id": "j"}),
        "created_at": "2026-01-01T09:00:00.123456+00:00",
    }
    await redis.xadd(stream, fields)
    await redis.xadd(stream, fields)  # the same event twice: stored once
    await redis.xadd(stream, {**fields, "id": "f" * 32, "target_agent": "bot", "created_at": str(T0)})
    await _recorder(redis, db).flush()
    assert await _count(db, EventMessage) == 2
    event = await EventRepository(db).get("e" * 32)
    assert (event.event_type, event.source_agent, event.target_agent) == ("task.completed", "mail", None)
    assert event.payload == {"job_id": "j"}
    assert event.created_at == datetime(2026, 1, 1, 9, 0, 0, 123456, tzinfo=UTC)
    assert (await EventRepository(db).get("f" * 32)).created_at == datetime.fromtimestamp(T0, UTC)


async def test_background_loop_records_and_drains_on_exit(redis: aioredis.Redis, db: Database) -> None:
    async with _recorder(redis, db, flush_interval=0.05) as rec:
        await emit(redis, *lifecycle("bg-1").values())

        async def recorded() -> bool:
            return rec.recorded >= 3

        await wait_until(recorded, what="the loop to record 3 entries")
        await emit(redis, *lifecycle("bg-2").values())
    assert {(await ExecutionRepository(db).get(j)).status for j in ("bg-1", "bg-2")} == {"success"}


async def test_a_loop_that_dies_is_restarted_and_records(
    redis: aioredis.Redis, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The recorder's loop runs under the supervisor: a crash that escapes it is logged and the loop
    restarted, so history is still recorded."""
    rec = _recorder(redis, db, flush_interval=0.05)
    real_run = rec._run
    crashes = {"left": 1}

    async def crashing_run() -> None:
        if crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError("escaped the loop")
        await real_run()

    rec._run = crashing_run  # type: ignore[method-assign]
    async with rec:
        await emit(redis, *lifecycle("sup-1").values())

        async def recorded() -> bool:
            return rec.recorded >= 3

        await wait_until(recorded, what="the restarted loop to record 3 entries")
    assert (await ExecutionRepository(db).get("sup-1")).status == "success"
    assert "escaped the loop" in caplog.text


async def test_database_failures_lose_and_duplicate_nothing(
    redis: aioredis.Redis, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faults at the seam: the first writes fail; the entries stay pending and are written once later."""
    failures = {"left": 3}
    jobs = [f"flaky-{i}" for i in range(20)]
    rec = _recorder(redis, db, flush_interval=0.05, max_backoff=0.1, batch_size=7)
    real_upsert = rec._upsert

    async def flaky_upsert(conn: Any, rows: list[ExecutionRow]) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError("INSERT", {}, ConnectionRefusedError("database is down"))
        await real_upsert(conn, rows)

    async def answers() -> bool:  # the outage ends only when the next write is attempted
        return False

    monkeypatch.setattr(rec, "_upsert", flaky_upsert)
    monkeypatch.setattr(rec, "_database_answers", answers)
    async with rec:
        for job in jobs:
            await emit(redis, *lifecycle(job).values())

        async def all_recorded() -> bool:
            return rec.recorded >= 60

        await wait_until(all_recorded, what="every entry to be recorded after the failures")
    assert rec.failures == 3
    page = await ExecutionRepository(db).list(limit=100)
    assert sorted(r.job_id for r in page.items) == sorted(jobs)
    assert {r.status for r in page.items} == {"success"}


async def test_custom_prefix_and_group_created_on_entry(redis_url: str, db: Database) -> None:
    from asyncsched._redis import create_redis

    client = create_redis(redis_url)
    try:
        settings = Settings(key_prefix="other")
        async with Recorder(redis_url, db=db, settings=settings, consumer="c"):
            groups = await client.xinfo_groups(_keys.lifecycle_stream("other", cluster=is_cluster(client)))
            assert [g["name"] for g in groups] in ([b"recorder"], ["recorder"])
            await emit(client, LifecycleRecord(Lifecycle.QUEUED, "p", "default"), prefix="other")

            async def seen() -> bool:
                return (await ExecutionRepository(db).list(job_id="p")).total == 1

            await wait_until(seen, what="the prefixed stream to be recorded")
    finally:
        await client.aclose()


async def test_a_restarted_recorder_writes_what_it_had_read(redis: aioredis.Redis, db: Database) -> None:
    """Entries read by a recorder that died before its XACK stay pending and are written on restart."""
    stream = _keys.lifecycle_stream("rq", cluster=is_cluster(redis))
    await _recorder(redis, db).flush()  # creates the group
    await emit(redis, *lifecycle("crashed").values())
    await redis.xreadgroup(GROUP, "test", {stream: ">"}, count=10)  # read, then "crash"
    assert (await redis.xpending(stream, GROUP))["pending"] == 3
    assert await _recorder(redis, db).flush() == 3
    assert (await ExecutionRepository(db).get("crashed")).status == "success"
    assert (await redis.xpending(stream, GROUP))["pending"] == 0


async def test_entries_of_a_dead_consumer_are_claimed(redis: aioredis.Redis, db: Database) -> None:
    stream = _keys.lifecycle_stream("rq", cluster=is_cluster(redis))
    await _recorder(redis, db).flush()
    await emit(redis, *lifecycle("orphaned").values())
    await redis.xreadgroup(GROUP, "dead-host", {stream: ">"}, count=10)
    assert await _recorder(redis, db, consumer="alive", claim_idle=0).flush() == 3
    assert (await ExecutionRepository(db).get("orphaned")).status == "success"


async def test_recorder_applies_retention(redis: aioredis.Redis, db: Database) -> None:
    old = T0 - 40 * 86400
    await emit(redis, *lifecycle("old", t0=old).values(), *lifecycle("new").values())
    await _recorder(redis, db, retention=False).flush()
    assert await _count(db) == 2
    async with _recorder(redis, db, retention=timedelta(days=30)):

        async def pruned() -> bool:
            return await _count(db) == 1

        await wait_until(pruned, what="the old execution to be pruned")
    assert (await ExecutionRepository(db).get("new")).status == "success"


async def test_nul_characters_are_stripped(redis: aioredis.Redis, db: Database) -> None:
    """PostgreSQL refuses NUL in text; it is dropped from text fields instead of refusing the record."""
    await emit(redis, LifecycleRecord(Lifecycle.FAILED, "nul", "default", error="bad \x00 byte"))
    await redis.xadd(
        _keys.event_log_stream("rq", cluster=is_cluster(redis)),
        {"id": "ev", "event_type": "x\x00", "source_agent": "a"},
    )
    await _recorder(redis, db).flush()
    assert (await ExecutionRepository(db).get("nul")).error == "bad  byte"
    assert (await EventRepository(db).get("ev")).event_type == "x"


async def test_a_row_the_database_refuses_is_dropped_alone(
    redis: aioredis.Redis, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that keeps failing while the database answers is written row by row; only the refused
    row is dropped (logged), the others are recorded and everything is acknowledged."""
    rec = _recorder(redis, db)
    real_upsert = rec._upsert

    async def refuse_poison(conn: Any, rows: list[ExecutionRow]) -> None:
        if any(r.job_id == "poison" for r in rows):
            raise RuntimeError("the database refuses this row")
        await real_upsert(conn, rows)

    monkeypatch.setattr(rec, "_upsert", refuse_poison)
    await emit(redis, *lifecycle("before").values(), LifecycleRecord(Lifecycle.QUEUED, "poison", "default"))
    await emit(redis, *lifecycle("after").values())
    for _ in range(2):  # the first failures look like an outage: raised, entries stay pending
        with pytest.raises(RuntimeError):
            await rec.flush()
    assert await rec.flush() == 7
    repo = ExecutionRepository(db)
    assert {r.job_id for r in (await repo.list()).items} == {"before", "after"}
    assert (await redis.xpending(_keys.lifecycle_stream("rq", cluster=is_cluster(redis)), GROUP))[
        "pending"
    ] == 0


async def test_recorder_survives_a_redis_restart(
    real_redis: RedisServer, real_redis_url: str, db: Database
) -> None:
    """Redis restarts empty (no persistence): the loop backs off, recreates its group and goes on."""
    from asyncsched._redis import create_redis

    client = create_redis(real_redis_url)
    try:
        async with Recorder(
            real_redis_url, db=db, settings=Settings(), consumer="t", flush_interval=0.05, max_backoff=0.2
        ) as rec:
            await emit(client, *lifecycle("before-restart").values())

            async def recorded(n: int) -> bool:
                return rec.recorded >= n

            await wait_until(lambda: recorded(3), what="the first job")
            await asyncio.to_thread(real_redis.restart)
            await client.aclose()
            client = create_redis(real_redis_url)  # the test's own connection died with the server
            await emit(client, *lifecycle("after-restart").values())
            await wait_until(lambda: recorded(6), what="the job after the restart")
        repo = ExecutionRepository(db)
        assert {(await repo.get(j)).status for j in ("before-restart", "after-restart")} == {"success"}
    finally:
        await client.aclose()


async def test_missing_tables_keep_everything_pending(redis: aioredis.Redis, database_url: str) -> None:
    """A database that was never migrated refuses every batch: nothing is dropped, it waits for the tables."""
    async with Database(database_url, auto_migrate=False) as db:
        await emit(redis, *lifecycle("early").values())
        rec = _recorder(redis, db)
        for _ in range(4):  # more than the poison threshold
            with pytest.raises(Exception, match="asyncsched_task_executions"):
                await rec.flush()
        assert (await redis.xpending(_keys.lifecycle_stream("rq", cluster=is_cluster(redis)), GROUP))[
            "pending"
        ] == 3
        await db.migrate()
        assert await rec.flush() == 3
        assert (await ExecutionRepository(db).get("early")).status == "success"


async def test_progress_keeps_the_latest_report_whatever_the_order(
    redis: aioredis.Redis, db: Database
) -> None:
    """Progress records never move the status back, and an older report never replaces a newer one."""
    recs = lifecycle("job-p")
    base = {"job_id": "job-p", "queue": "default", "worker": "w1"}
    early = LifecycleRecord(Lifecycle.PROGRESS, progress="0.5", progress_at=T0 + 2, **base)
    late = LifecycleRecord(Lifecycle.PROGRESS, progress='{"step": "b"}', progress_at=T0 + 3, **base)
    rec = _recorder(redis, db)
    await emit(redis, recs["queued"], early)
    await rec.flush()
    row = await ExecutionRepository(db).get("job-p")
    assert (row.status, row.progress) == ("running", 0.5)  # a report means the job runs
    await emit(redis, recs["success"], late)  # a report recorded after the outcome, in one batch
    await rec.flush()
    await emit(redis, early)  # delivered again, late (a redelivery): older than what is stored
    await rec.flush()
    row = await ExecutionRepository(db).get("job-p")
    assert (row.status, row.progress) == ("success", {"step": "b"})
    assert row.progress_at == datetime.fromtimestamp(T0 + 3, UTC)
    assert row.duration == pytest.approx(2.5)
    assert await _count(db) == 1
