"""Executions only queued are held back briefly (one write for most jobs), never lost, never held long."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from asyncsched import _keys
from asyncsched.config import Settings
from asyncsched.store import Database, ExecutionRepository, Recorder
from asyncsched.store._history_rows import ExecutionRow
from asyncsched.store._recorder import GROUP

from .helpers import emit, lifecycle, wait_until

STREAM = _keys.lifecycle_stream("rq")


def _recorder(redis: aioredis.Redis, db: Database, **options: Any) -> Recorder:
    options.setdefault("consumer", "test")
    options.setdefault("flush_interval", 0.05)
    return Recorder(redis, db=db, settings=Settings(), **options)


def _spy(rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    written: list[str] = []
    real = rec._upsert

    async def spy(conn: Any, rows: list[ExecutionRow]) -> None:
        written.extend(f"{r.job_id}:{r.status}" for r in rows)
        await real(conn, rows)

    monkeypatch.setattr(rec, "_upsert", spy)
    return written


async def _pending(redis: aioredis.Redis) -> int:
    return int((await redis.xpending(STREAM, GROUP))["pending"])


async def _exists(db: Database, job_id: str) -> bool:
    return (await ExecutionRepository(db).list(job_id=job_id)).total > 0


async def test_a_job_that_finishes_within_the_hold_takes_one_write(
    redis: aioredis.Redis, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    recs = lifecycle("h1")
    rec = _recorder(redis, db, hold_queued=30.0)
    written = _spy(rec, monkeypatch)
    async with rec:
        await emit(redis, recs["queued"])

        async def held() -> bool:
            return len(rec.hold) == 1

        await wait_until(held, what="the queued row to be held")
        assert written == []
        assert await _pending(redis) == 1  # not acknowledged while held: a crash re-reads it
        await emit(redis, recs["started"], recs["success"])

        async def recorded() -> bool:
            return await _exists(db, "h1") and await _pending(redis) == 0

        await wait_until(recorded, what="the job's row")
    assert written == ["h1:success"]  # one write: the final state
    assert (await ExecutionRepository(db).get("h1")).enqueued_at is not None  # the held record merged


async def test_a_job_that_stays_queued_is_recorded_after_the_hold(
    redis: aioredis.Redis, db: Database
) -> None:
    hold = 0.5
    async with _recorder(redis, db, hold_queued=hold):
        start = time.monotonic()
        await emit(redis, lifecycle("h2")["queued"])

        async def recorded() -> bool:
            return await _exists(db, "h2")

        await wait_until(recorded, timeout=10, what="the queued row")
        elapsed = time.monotonic() - start
        assert await _pending(redis) == 0
    assert (await ExecutionRepository(db).get("h2")).status == "queued"
    # held at most `hold` plus one loop interval, a write and this poll (generous: a loaded machine)
    assert elapsed < hold + 3.0


async def test_held_rows_are_never_lost(redis: aioredis.Redis, db: Database) -> None:
    """A Recorder that holds a row and dies without writing it: the entry is pending, the next run writes it;
    flush() writes held rows at once."""
    await emit(redis, lifecycle("h3")["queued"], lifecycle("h4")["queued"])
    first = _recorder(redis, db, hold_queued=60.0, batch_size=1)
    await first.group.ensure()
    await first._pump(limit=1)  # the loop's step: reads h3 and holds it
    assert len(first.hold) == 1
    assert not await _exists(db, "h3")
    # `first` dies here without a word; a restart under the same name re-reads its pending entries
    again = _recorder(redis, db, hold_queued=60.0)
    assert await again.flush() == 2
    assert {r.job_id for r in (await ExecutionRepository(db).list()).items} == {"h3", "h4"}
    assert await _pending(redis) == 0
    await first.redis.aclose() if first._owns_redis else None


async def test_leaving_writes_the_held_rows(redis: aioredis.Redis, db: Database) -> None:
    async with _recorder(redis, db, hold_queued=60.0) as rec:
        await emit(redis, lifecycle("h5")["queued"])

        async def held() -> bool:
            return len(rec.hold) == 1

        await wait_until(held, what="the queued row to be held")
    assert (await ExecutionRepository(db).get("h5")).status == "queued"
    assert await _pending(redis) == 0


async def test_a_catch_up_merges_each_job_across_its_reads(
    redis: aioredis.Redis, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog (every queued record first, then the outcomes, as after a bulk enqueue drained while the
    Recorder was away): the reader is behind, so rows are held across reads until their outcome and each
    job takes ONE write, although its records are several full reads apart."""
    jobs = [f"c{i}" for i in range(12)]
    recs = {job: lifecycle(job) for job in jobs}
    await emit(redis, *(recs[j]["queued"] for j in jobs))
    await emit(redis, *(r for j in jobs for r in (recs[j]["started"], recs[j]["success"])))
    rec = _recorder(redis, db, hold_queued=0.01, hold_behind=60.0, batch_size=4, claim_idle=600.0)
    written = _spy(rec, monkeypatch)
    async with rec:

        async def recorded() -> bool:
            return await _pending(redis) == 0 and len(written) >= len(jobs)

        await wait_until(recorded, what="every job's row")
    assert sorted(written) == sorted(f"{j}:success" for j in jobs)  # one write each, the final one
    rows = {r.job_id: r for r in (await ExecutionRepository(db).list()).items}
    assert all(rows[j].enqueued_at is not None and rows[j].status == "success" for j in jobs)


async def test_a_caught_up_reader_holds_only_hold_queued(
    redis: aioredis.Redis, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The longer hold applies while reads come back full only: a reader at the end of the stream writes a
    row that stays queued after ``hold_queued``, whatever ``hold_behind``."""
    async with _recorder(redis, db, hold_queued=0.2, hold_behind=3600.0, claim_idle=7200.0) as rec:
        await emit(redis, lifecycle("q1")["queued"])

        async def recorded() -> bool:
            return await _exists(db, "q1")

        await wait_until(recorded, timeout=20, what="the queued row")
        assert not rec._behind
    assert (await ExecutionRepository(db).get("q1")).status == "queued"


async def test_held_rows_are_bounded(
    redis: aioredis.Redis, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``hold_rows`` held rows, new rows are written at once (their outcome updates them later)."""
    await emit(redis, *(lifecycle(f"b{i}")["queued"] for i in range(5)))
    rec = _recorder(redis, db, hold_queued=60.0, hold_rows=2, batch_size=5)
    written = _spy(rec, monkeypatch)
    await rec.group.ensure()
    await rec._pump(limit=1)  # the loop's step: one read of 5 queued records
    assert len(rec.hold) == 2
    assert sorted(written) == ["b2:queued", "b3:queued", "b4:queued"]
    assert await _pending(redis) == 2  # the held ones only
    assert await rec.flush() == 2
    assert await _pending(redis) == 0
    await rec.redis.aclose() if rec._owns_redis else None


async def test_a_crash_between_commit_and_acknowledgement_writes_nothing_twice(
    redis: aioredis.Redis, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows are committed, then the Recorder dies before its XACK: the entries are pending, a restart
    reads and writes them again, and the history is the same: one row per execution, nothing doubled."""
    recs = lifecycle("k1")
    await emit(redis, recs["queued"], recs["started"], recs["success"], lifecycle("k2")["queued"])
    first = _recorder(redis, db, hold_queued=0.0)

    async def crash(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("killed between the commit and the XACK")

    monkeypatch.setattr(first.group, "ack", crash)
    with pytest.raises(ConnectionError):
        await first.flush()
    assert await _pending(redis) == 4  # committed, not acknowledged
    before = {
        r.job_id: (r.status, r.enqueued_at, r.ended_at) for r in (await ExecutionRepository(db).list()).items
    }
    assert before["k1"][0] == "success"
    again = _recorder(redis, db, hold_queued=0.0)
    assert await again.flush() == 4
    after = await ExecutionRepository(db).list()
    assert after.total == 2
    assert {r.job_id: (r.status, r.enqueued_at, r.ended_at) for r in after.items} == before
    assert await _pending(redis) == 0
    for rec in (first, again):
        await rec.redis.aclose() if rec._owns_redis else None
