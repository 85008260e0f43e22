"""The Recorder's bulk path: one row write per execution per batch, the PostgreSQL COPY staging table
reused across batches and after a rolled-back one, exact microsecond times."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select

from asyncsched import _keys
from asyncsched._lifecycle import Lifecycle, LifecycleRecord
from asyncsched.config import Settings
from asyncsched.store import Database, ExecutionRepository, Recorder, TaskExecution
from asyncsched.store._history_rows import ExecutionRow

from .helpers import T0, emit, lifecycle


def _recorder(redis: aioredis.Redis, db: Database, **options: Any) -> Recorder:
    options.setdefault("consumer", "test")
    return Recorder(redis, db=db, settings=Settings(), **options)


async def _statuses(db: Database) -> dict[str, str]:
    async with db.session() as s:
        rows = (await s.execute(select(TaskExecution.job_id, TaskExecution.status))).all()
    return {str(job): str(status) for job, status in rows}


async def test_records_of_a_job_in_one_batch_are_one_row_write(
    redis: aioredis.Redis, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = _recorder(redis, db)
    written: list[list[ExecutionRow]] = []
    real_upsert = rec._upsert

    async def spy(conn: Any, rows: list[ExecutionRow]) -> None:
        written.append(list(rows))
        await real_upsert(conn, rows)

    monkeypatch.setattr(rec, "_upsert", spy)
    jobs = [lifecycle(f"j{i}") for i in range(3)]
    await emit(redis, *(job[kind] for kind in ("queued", "started", "success") for job in jobs))
    assert await rec.flush() == 9
    assert len(written) == 1
    assert sorted((r.job_id, r.status, r.duration) for r in written[0]) == [
        (f"j{i}", "success", 2.5) for i in range(3)
    ]
    assert await _statuses(db) == {f"j{i}": "success" for i in range(3)}


async def test_many_batches_in_flight_write_every_row_once(redis: aioredis.Redis, db: Database) -> None:
    """Small batches, several at once, on pooled connections: the staging table of a connection holds
    only its own batch (emptied at commit), every execution ends with one final row."""
    records = [lifecycle(f"m{i:03d}") for i in range(60)]
    await emit(redis, *(r["queued"] for r in records))
    await emit(redis, *(r[kind] for r in records for kind in ("started", "success")))
    rec = _recorder(redis, db, batch_size=7, in_flight=3)
    assert await rec.flush() == 180
    assert await _statuses(db) == {f"m{i:03d}": "success" for i in range(60)}
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(TaskExecution)) == 60


async def test_a_rolled_back_batch_leaves_nothing_staged(
    redis: aioredis.Redis, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first write stages its rows, then fails: the transaction (and, on PostgreSQL, the staging
    table it created) is rolled back; the retry on the same connection writes the rows once."""
    rec = _recorder(redis, db, in_flight=1)
    real_upsert = rec._upsert
    fail = {"left": 1}

    async def upsert_then_fail(conn: Any, rows: list[ExecutionRow]) -> None:
        await real_upsert(conn, rows)
        if fail["left"]:
            fail["left"] -= 1
            raise RuntimeError("the commit fails")

    monkeypatch.setattr(rec, "_upsert", upsert_then_fail)
    await emit(redis, *lifecycle("r1").values())
    with pytest.raises(RuntimeError):
        await rec.flush()
    assert await _statuses(db) == {}
    await emit(redis, *lifecycle("r2").values())
    assert await rec.flush() == 6
    assert await _statuses(db) == {"r1": "success", "r2": "success"}


async def test_times_are_recorded_to_the_microsecond(redis: aioredis.Redis, db: Database) -> None:
    """Times travel as integer microseconds, rounded as ``datetime.fromtimestamp`` rounds."""
    start, end = T0 + 0.1234565, T0 + 7.0000005
    await emit(
        redis,
        LifecycleRecord(Lifecycle.QUEUED, "t1", "default", enqueued_at=T0 + 0.999999),
        LifecycleRecord(Lifecycle.SUCCESS, "t1", "default", started_at=start, ended_at=end),
    )
    assert await _recorder(redis, db).flush() == 2
    row = await ExecutionRepository(db).get("t1")
    assert row.enqueued_at == datetime.fromtimestamp(T0 + 0.999999, UTC)
    assert row.started_at == datetime.fromtimestamp(start, UTC)
    assert row.ended_at == datetime.fromtimestamp(end, UTC)
    assert row.duration == pytest.approx((row.ended_at - row.started_at).total_seconds(), abs=1e-9)


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e308"])
async def test_a_time_out_of_range_skips_its_record_only(
    redis: aioredis.Redis, db: Database, value: str
) -> None:
    fields = {"kind": "started", "job_id": "bad", "queue": "default", "started_at": value}
    await redis.xadd(_keys.lifecycle_stream("rq"), fields)  # type: ignore[arg-type]
    await emit(redis, *lifecycle("good").values())
    assert await _recorder(redis, db).flush() == 4
    assert await _statuses(db) == {"good": "success"}


async def test_recorders_sharing_the_group_write_each_entry_once(
    redis: aioredis.Redis, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two Recorders of one host (default names differ) read the group in turn: every entry is read,
    written and acknowledged by exactly one of them, and nothing is left pending."""
    first = Recorder(redis, db=db, settings=Settings(), batch_size=5)
    second = Recorder(redis, db=db, settings=Settings(), batch_size=5)
    monkeypatch.setattr(second, "consumer", first.consumer + "-other")  # two processes' names
    second.account.consumer = second.group.consumer = second.consumer
    assert first.consumer.endswith(f"-{os.getpid()}")  # the default name: host and process
    written: dict[str, list[str]] = {"first": [], "second": []}
    for name, rec in (("first", first), ("second", second)):
        real_upsert = rec._upsert

        async def spy(conn: Any, rows: list[ExecutionRow], name: str = name, real: Any = real_upsert) -> None:
            written[name].extend(f"{r.job_id}:{r.status}" for r in rows)
            await real(conn, rows)

        monkeypatch.setattr(rec, "_upsert", spy)
    await first.group.ensure()
    records = [lifecycle(f"s{i:02d}") for i in range(20)]
    await emit(redis, *(r[kind] for r in records for kind in ("queued", "started", "success")))
    while await first.account.backlog():
        await first._pump(limit=1)  # one batch each, alternately
        await second._pump(limit=1)
    assert first.recorded + second.recorded == 60
    assert first.recorded
    assert second.recorded
    assert not set(written["first"]) & set(written["second"])
    assert await _statuses(db) == {f"s{i:02d}": "success" for i in range(20)}
    assert (await redis.xpending(_keys.lifecycle_stream("rq"), "recorder"))["pending"] == 0


async def test_a_reader_gone_with_nothing_pending_leaves_the_group(
    redis: aioredis.Redis, db: Database
) -> None:
    stream = _keys.lifecycle_stream("rq")
    rec = _recorder(redis, db, claim_idle=0)
    await rec.group.ensure()
    await emit(redis, *lifecycle("g1").values())
    await redis.xreadgroup("recorder", "ghost", {stream: ">"}, count=1)  # it read one entry, then died
    assert await rec.flush() == 3  # the ghost's entry is claimed and written
    await rec._claim()  # nothing pending any more: the ghost leaves
    names = {str(c["name"], "utf-8") if isinstance(c["name"], bytes) else c["name"] for c in
             await redis.xinfo_consumers(stream, "recorder")}  # fmt: skip
    assert "ghost" not in names
    assert await _statuses(db) == {"g1": "success"}


async def test_a_read_sent_ahead_is_taken_or_read_again(
    redis: aioredis.Redis, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next read is sent while a batch is written: a loop round that ends takes it in the next
    round; a failed write drops it and its entries, pending, are read again: nothing lost or doubled."""
    records = [lifecycle(f"r{i}") for i in range(4)]
    await emit(redis, *(r[kind] for r in records for kind in ("queued", "started", "success")))
    rec = _recorder(redis, db, batch_size=3, in_flight=1, hold_queued=0.0)
    await rec.group.ensure()
    assert await rec._pump(limit=2) == 6  # (the first round claims, the second reads ahead)
    assert rec._ahead is not None
    real = rec._upsert
    failures = [1]

    async def flaky(conn: Any, rows: list[ExecutionRow]) -> None:
        if failures:
            failures.pop()
            raise ConnectionError("database gone for one write")
        await real(conn, rows)

    monkeypatch.setattr(rec, "_upsert", flaky)
    with pytest.raises(ConnectionError):
        await rec._pump(limit=None)  # takes the batch read ahead, whose write fails
    assert rec._ahead is None
    assert await rec.flush() == 6
    assert await _statuses(db) == {f"r{i}": "success" for i in range(4)}
    assert int((await redis.xpending(_keys.lifecycle_stream("rq"), "recorder"))["pending"]) == 0
    await rec.redis.aclose() if rec._owns_redis else None


async def test_the_objects_frozen_while_recorders_run_are_given_back(
    redis: aioredis.Redis, db: Database
) -> None:
    """Recorders leave the process' long-lived objects out of full collections while they run (gc.freeze)
    and collect the young generation less often; the last one to stop gives both back, so what became
    garbage meanwhile is collected."""
    import gc
    import weakref

    class Box:
        pass

    from asyncsched.store._recorder_write import YOUNG

    box = Box()
    box.cycle = box  # type: ignore[attr-defined]
    ref = weakref.ref(box)
    before = gc.get_threshold()
    async with _recorder(redis, db, consumer="f1"):
        async with _recorder(redis, db, consumer="f2"):
            del box
            gc.collect()
            assert ref() is not None  # frozen: alive when the first Recorder started
            assert gc.get_threshold() == (max(before[0], YOUNG), *before[1:])  # young: collected less often
        gc.collect()
        assert ref() is not None  # f1 still runs
        assert gc.get_threshold()[0] == max(before[0], YOUNG)
    gc.collect()
    assert ref() is None  # given back and collected
    assert gc.get_threshold() == before  # the thresholds too
