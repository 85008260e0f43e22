"""The lifecycle stream is never trimmed past an unread record; what is dropped anyway is counted exactly,
logged once, reported, and its executions end ``unknown`` instead of staying open."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy.exc import OperationalError

from asyncsched import _keys
from asyncsched._lifecycle import Lifecycle, LifecycleRecord
from asyncsched.config import Settings
from asyncsched.store import Database, ExecutionRepository, Recorder
from asyncsched.store._history_loss import history_loss
from asyncsched.store._history_rows import ExecutionRow
from asyncsched.store._recorder import GROUP

from .helpers import emit, lifecycle

STREAM = _keys.lifecycle_stream("rq")


def _recorder(redis: aioredis.Redis, db: Database, **options: Any) -> Recorder:
    options.setdefault("consumer", "test")
    options.setdefault("reconcile_age", 0.0)
    return Recorder(redis, db=db, settings=Settings(), **options)


async def test_trimming_keeps_what_any_group_has_not_acknowledged(
    redis: aioredis.Redis, db: Database
) -> None:
    rec = _recorder(redis, db)
    await rec.flush()  # creates the recorder's group
    await redis.xgroup_create(STREAM, "events", id="0")
    await emit(redis, *lifecycle("a").values(), *lifecycle("b").values())
    assert await rec.flush() == 6
    assert await rec.account.trim() == 0  # recorded, but "events" has read nothing
    assert await redis.xlen(STREAM) == 6
    await redis.xreadgroup("events", "e1", {STREAM: ">"}, count=4)  # read 4, acknowledge none
    assert await rec.account.trim() == 0  # pending in "events": still kept
    pending = await redis.xpending_range(STREAM, "events", "-", "+", 10)
    await redis.xack(STREAM, "events", *(p["message_id"] for p in pending[:2]))
    assert await rec.account.trim() == 2  # below the oldest pending entry of every group
    assert await redis.xlen(STREAM) == 4
    assert await rec.backlog() == {STREAM: 0, _keys.event_log_stream("rq"): 0}


async def test_records_dropped_unread_are_counted_exactly_and_logged_once(
    redis: aioredis.Redis, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream capped while the Recorder was away: the loss is the exact number of records it never
    read, logged in one line with the time range; the backlog never counts them."""
    rec = _recorder(redis, db)
    await rec.flush()
    await emit(redis, *lifecycle("early").values())
    assert await rec.flush() == 3
    jobs = [f"job-{i}" for i in range(40)]
    for job in jobs:
        await emit(redis, *lifecycle(job).values())  # 120 records
    await redis.xtrim(STREAM, maxlen=50, approximate=False)  # the producers' hard bound bites: 70 dropped
    assert await rec.backlog() == {STREAM: 50, _keys.event_log_stream("rq"): 0}
    with caplog.at_level(logging.ERROR, logger="asyncsched.store.recorder"):
        assert await rec.flush() == 50
        rec.losses.flush(force=True)
        rec.losses.flush(force=True)  # nothing new: no second line
    lines = [r.getMessage() for r in caplog.records if "history lost" in r.getMessage()]
    assert len(lines) == 1
    assert "70 lifecycle records" in lines[0]
    assert "written between" in lines[0]
    assert (await history_loss(redis, "rq")).lost == 70
    assert await rec.backlog() == {STREAM: 0, _keys.event_log_stream("rq"): 0}  # no phantom backlog
    await emit(redis, *lifecycle("after").values())
    assert await rec.flush() == 3
    assert (await history_loss(redis, "rq")).lost == 70  # nothing more
    assert (await ExecutionRepository(db).get("after")).status == "success"


async def test_pending_records_trimmed_during_an_outage_count_as_lost_once(
    redis: aioredis.Redis, db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The Recorder read a batch, the database is down, the cap trims that batch: the records come back
    empty. They count as lost once, the Recorder does not claim it "writes again" while the database is
    down (it did not write anything), and says so once when it really writes."""
    down = {"on": True}
    rec = _recorder(redis, db, batch_size=6)
    real_upsert = rec._upsert

    async def upsert(conn: Any, rows: list[ExecutionRow]) -> None:
        if down["on"]:
            raise OperationalError("INSERT", {}, ConnectionRefusedError("database is down"))
        await real_upsert(conn, rows)

    async def answers() -> bool:
        return not down["on"]

    monkeypatch.setattr(rec, "_upsert", upsert)
    monkeypatch.setattr(rec, "_database_answers", answers)
    await rec.flush()
    await emit(redis, *lifecycle("a").values(), *lifecycle("b").values())
    with caplog.at_level(logging.INFO, logger="asyncsched.store.recorder"):
        for _ in range(3):
            with pytest.raises(OperationalError):
                await rec.flush()
            rec._failed(OperationalError("x", {}, Exception("down")), 0.1)
        await redis.xtrim(STREAM, maxlen=0, approximate=False)  # the 6 pending records are dropped
        await emit(redis, *lifecycle("c").values())
        for _ in range(2):  # the emptied entries are acknowledged and counted once; "c" waits
            with pytest.raises(OperationalError):
                await rec.flush()
            rec._failed(OperationalError("x", {}, Exception("down")), 0.1)
            assert (await history_loss(redis, "rq")).lost == 6
        down["on"] = False
        assert await rec.flush() == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot record" in m for m in messages) == 1
    assert sum("writes again" in m for m in messages) == 1
    assert (await history_loss(redis, "rq")).lost == 6
    assert (await ExecutionRepository(db).get("c")).status == "success"


async def test_open_executions_of_lost_records_end_unknown(redis: aioredis.Redis, db: Database) -> None:
    """Rows left queued/running because their later records were dropped are marked ``unknown`` with a
    reason once the Recorder caught up; a late outcome still wins over ``unknown``."""
    rec = _recorder(redis, db)
    await rec.flush()
    await emit(redis, LifecycleRecord(Lifecycle.QUEUED, "gone", "default"))
    await emit(redis, LifecycleRecord(Lifecycle.STARTED, "ended", "default", started_at=1.0e9))
    await emit(redis, LifecycleRecord(Lifecycle.STARTED, "alive", "default", started_at=1.0e9))
    await rec.flush()
    await redis.hset("rq:job:ended", mapping={"status": "finished"})
    await redis.hset("rq:job:alive", mapping={"status": "started"})
    assert await rec.reconciler.run_once() == 0  # first pass: seen; marked once the Recorder caught up
    assert await rec.reconciler.run_once() == 2
    repo = ExecutionRepository(db)
    gone, ended, alive = [await repo.get(j) for j in ("gone", "ended", "alive")]
    assert (gone.status, ended.status, alive.status) == ("unknown", "unknown", "running")
    assert gone.error is not None
    assert "no longer exists in Redis" in gone.error
    assert ended.error is not None
    assert "Redis says the job is finished" in ended.error
    assert (await repo.counts())["unknown"] == 2
    await emit(
        redis, LifecycleRecord(Lifecycle.SUCCESS, "ended", "default", started_at=1.0e9, ended_at=1.0e9 + 2)
    )
    await emit(redis, LifecycleRecord(Lifecycle.STARTED, "gone", "default", started_at=1.0e9))
    await rec.flush()
    ended, gone = await repo.get("ended"), await repo.get("gone")
    assert (ended.status, ended.error, ended.duration) == ("success", None, pytest.approx(2.0))
    assert gone.status == "unknown"  # a late start does not reopen it


async def test_reconciler_waits_for_records_not_yet_recorded(redis: aioredis.Redis, db: Database) -> None:
    """A job that ended in Redis while its outcome record is still unread is not marked: the record is
    written first and the row ends with its real outcome."""
    rec = _recorder(redis, db)
    await rec.flush()
    await emit(redis, LifecycleRecord(Lifecycle.STARTED, "slow", "default", started_at=1.0e9))
    await rec.flush()
    await redis.hset("rq:job:slow", mapping={"status": "finished"})
    await emit(
        redis, LifecycleRecord(Lifecycle.SUCCESS, "slow", "default", started_at=1.0e9, ended_at=1.0e9 + 1)
    )
    assert await rec.reconciler.run_once() == 0  # seen ended, but its record is unread
    assert await rec.reconciler.run_once() == 0  # still unread: nothing marked
    await rec.flush()
    assert await rec.reconciler.run_once() == 0
    assert (await ExecutionRepository(db).get("slow")).status == "success"


async def test_health_is_degraded_and_metrics_count_the_loss(redis_url: str, tmp_path: Any) -> None:
    from asyncsched._redis import create_redis
    from asyncsched.web import Services, create_app

    settings = Settings(redis_url=redis_url, database_url=f"sqlite+aiosqlite:///{tmp_path}/h.db")
    client = create_redis(redis_url)
    try:
        async with Services(settings) as services:
            transport = httpx.ASGITransport(app=create_app(services))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://localhost/api/scheduler"
            ) as http:
                assert (await http.get("/health")).json()["status"] == "ok"
                await client.hset(
                    _keys.lifecycle_ledger("rq"), mapping={"lost": 7, "last_loss_at": _now_ms()}
                )
                health = (await http.get("/health")).json()
                assert health["status"] == "degraded"
                assert "lost 7 lifecycle records" in health["history"]
                metrics = (await http.get("/metrics")).text
                assert "asyncsched_history_lost_total 7" in metrics
    finally:
        await client.aclose()


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


async def test_group_counters_survive_a_recorder_restart(redis: aioredis.Redis, db: Database) -> None:
    """Accounting lives in Redis: a new Recorder (another process) goes on with exact figures."""
    await _recorder(redis, db).flush()
    await emit(redis, *lifecycle("x").values())
    await redis.xreadgroup(GROUP, "other", {STREAM: ">"}, count=1)  # someone else read one (no accounting)
    rec = _recorder(redis, db, consumer="second", claim_idle=0)
    assert await rec.flush() == 3
    assert await rec.backlog() == {STREAM: 0, _keys.event_log_stream("rq"): 0}
    assert (await history_loss(redis, "rq")).lost == 0
