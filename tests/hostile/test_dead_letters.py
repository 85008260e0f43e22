"""Poison stream entries of the Recorder and the LifecyclePublisher go to the dead-letter stream, as durable
subscriptions' do (one stream consumer, ``asyncsched._streams``): each one skipped alone, the readers go on,
the letter says where it was, why, and what it held, and /metrics counts it (issue 19)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis

from asyncsched import _keys, _metrics, _streams
from asyncsched._lifecycle import Lifecycle, LifecycleRecord
from asyncsched.config import Settings
from asyncsched.events import EventBus, LifecyclePublisher
from asyncsched.events._poison import DeadLetter, list_dead_letters
from tests.waiting import eventually

STREAM = _keys.lifecycle_stream("rq")

# Lifecycle records no reader can decode: an unknown kind, no job id, an attempt that is not a number.
POISON: list[dict[str, Any]] = [
    {"kind": "bogus", "job_id": "p1", "queue": "q"},
    {"kind": "started", "queue": "q"},
    {"kind": "started", "job_id": "p3", "queue": "q", "attempt": "x"},
]


async def _letters(redis: aioredis.Redis, group: str, n: int) -> list[DeadLetter]:
    async def got() -> list[DeadLetter] | None:
        letters = [x for x in await list_dead_letters(redis, "rq", count=1000) if x.group == group]
        return letters if len(letters) >= n else None

    found = await eventually(got, 30, f"{n} dead letter(s) of group {group}")
    assert found is not None
    return found


def _check(letters: list[DeadLetter], ids: list[bytes], group: str) -> None:
    assert sorted(x.entry for x in letters) == sorted(i.decode() for i in ids)
    for letter in letters:
        assert (letter.source, letter.group) == (STREAM, group)
        assert letter.reason.startswith("malformed: ")
        data = json.loads(letter.data)  # the entry's fields, readable back
        assert data == POISON[ids.index(letter.entry.encode())]
        assert letter.at is not None


async def _metric_lines(redis: aioredis.Redis) -> list[str]:
    return _metrics.process_lines() + await _metrics.redis_lines(redis, "rq")


async def test_lifecycle_publisher_dead_letters_records_it_cannot_decode(
    redis_url: str, redis: aioredis.Redis
) -> None:
    settings = Settings(redis_url=redis_url)
    before = _streams.dead_lettered.get("events", 0)
    async with EventBus(settings=settings, agent_name="*") as watcher, LifecyclePublisher(settings=settings):
        ids = [await redis.xadd(STREAM, fields) for fields in POISON]
        await redis.xadd(STREAM, LifecycleRecord(Lifecycle.QUEUED, "good", "q").encode())
        event = await watcher.listen(15)
        assert event is not None
        assert (event.event_type, event.payload["job_id"]) == ("task.queued", "good")
        letters = await _letters(redis, "events", len(POISON))
    _check(letters, ids, "events")
    assert _streams.dead_lettered["events"] == before + len(POISON)
    lines = await _metric_lines(redis)
    assert f'asyncsched_dead_lettered_total{{group="events"}} {before + len(POISON)}' in lines
    assert f"asyncsched_dead_letters {len(POISON)}" in lines
    assert (await redis.xpending(STREAM, "events"))["pending"] == 0


async def test_recorder_dead_letters_history_entries_it_cannot_decode(
    redis_url: str, database_url: str, redis: aioredis.Redis
) -> None:
    from asyncsched.store import Database, ExecutionRepository, Recorder

    settings = Settings(redis_url=redis_url, database_url=database_url)
    before = _streams.dead_lettered.get("recorder", 0)
    async with Database(settings=settings) as db:
        await db.migrate()
        async with Recorder(redis, db=db, settings=settings, flush_interval=0.05) as recorder:
            ids = [await redis.xadd(STREAM, fields) for fields in POISON]
            now = time.time()
            good = LifecycleRecord(Lifecycle.SUCCESS, "good", "q", started_at=now, ended_at=now + 1)
            await redis.xadd(STREAM, good.encode())
            repo = ExecutionRepository(db)

            async def recorded() -> bool:
                try:
                    return bool(await repo.get("good"))
                except LookupError:
                    return False

            await eventually(recorded, 30, "the good record")
            letters = await _letters(redis, "recorder", len(POISON))
            assert recorder._task is not None
            assert not recorder._task.done()
    _check(letters, ids, "recorder")
    assert _streams.dead_lettered["recorder"] == before + len(POISON)
    lines = await _metric_lines(redis)
    assert f'asyncsched_dead_lettered_total{{group="recorder"}} {before + len(POISON)}' in lines
    assert f"asyncsched_dead_letters {len(POISON)}" in lines
