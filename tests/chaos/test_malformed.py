"""Scenario 3: malformed input. Corrupt job hashes, refused serializers, unimportable functions, values and
exceptions that cannot be rendered each end as a failed job with a clear reason while the worker goes on;
garbage in the lifecycle stream, the event log and the pub/sub channels kills neither the Recorder nor a
subscriber; a tasks.yaml full of mistakes is reported in one error naming file, line, task and field."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis as syncredis
import redis.asyncio as aioredis
from rq import Queue as RQQueue

from asyncsched import _keys
from asyncsched._lifecycle import Lifecycle, LifecycleRecord
from asyncsched._redis import create_redis
from asyncsched.config import Settings
from asyncsched.exceptions import InvalidJob, TaskDefinitionError
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.store import Database, EventRepository, ExecutionRepository, Recorder
from asyncsched.testing import run_burst
from tests.waiting import eventually

from . import chaosjobs

Corrupt = Callable[[aioredis.Redis, str], Awaitable[Any]]


async def _hset(r: aioredis.Redis, job_id: str, **fields: Any) -> None:
    await r.hset(f"rq:job:{job_id}", mapping=fields)


CORRUPTIONS: dict[str, tuple[Corrupt, str]] = {
    "missing-data": (lambda r, j: r.hdel(f"rq:job:{j}", "data"), "no 'data' field"),
    "garbage-data": (
        lambda r, j: _hset(r, j, data=b"\x00\xffnot zlib, not json"),
        "UnsafeJob: payload is neither JSON nor a pickle with a protocol header",
    ),  # refused unread, and the reason does not call it a pickle
    "data-not-a-call": (lambda r, j: _hset(r, j, data=b'{"just": "a dict"}'), "InvalidJob"),
    "bad-timeout": (lambda r, j: _hset(r, j, timeout="soon"), "InvalidJob"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
async def test_corrupt_job_hash_fails_clearly_and_the_worker_goes_on(real_redis_url: str, case: str) -> None:
    corrupt, reason = CORRUPTIONS[case]
    settings = Settings(redis_url=real_redis_url)
    r = create_redis(real_redis_url)
    try:
        async with TaskQueue(real_redis_url, settings=settings) as q:
            bad = await q.enqueue(chaosjobs.ok, args=("bad",))
            await corrupt(r, bad)
            good = await q.enqueue(chaosjobs.ok, args=("good",))
            await run_burst(redis=real_redis_url, settings=settings)
            rec = await q.job(bad)
            assert rec.status == JobStatus.FAILED
            assert reason in (rec.error or "") + (rec.traceback or ""), rec
            assert await q.result(good) == "good"
    finally:
        await r.aclose()


@pytest.mark.parametrize("field", ["enqueued_at", "created_at", "started_at", "ended_at"])
async def test_bad_timestamps_neither_stop_the_job_nor_its_readers(real_redis_url: str, field: str) -> None:
    settings = Settings(redis_url=real_redis_url)
    r = create_redis(real_redis_url)
    try:
        async with TaskQueue(real_redis_url, settings=settings) as q:
            job_id = await q.enqueue(chaosjobs.ok, args=("fine",))
            await _hset(r, job_id, **{field: "yesterday-ish"})
            assert (await q.job(job_id)).status == JobStatus.QUEUED  # reading does not crash
            await q.list_jobs()
            await run_burst(redis=real_redis_url, settings=settings)
            assert await q.status(job_id) == JobStatus.SUCCESS
            assert await q.result(job_id) == "fine"
    finally:
        await r.aclose()


async def test_unknown_status_does_not_wedge_the_job_or_the_readers(real_redis_url: str) -> None:
    settings = Settings(redis_url=real_redis_url)
    r = create_redis(real_redis_url)
    try:
        async with TaskQueue(real_redis_url, settings=settings) as q:
            job_id = await q.enqueue(chaosjobs.ok, args=("odd",))
            await _hset(r, job_id, status="zombie")
            with pytest.raises(InvalidJob, match="unknown RQ job status 'zombie'"):
                await q.job(job_id)  # a clear error, not a crash
            await q.queue_counts()
            good = await q.enqueue(chaosjobs.ok, args=("good",))
            await run_burst(redis=real_redis_url, settings=settings)
            assert await q.result(good) == "good"
            # The claim script only refuses started/finished/canceled: the job ran and ended normally.
            assert await q.status(job_id) in {JobStatus.SUCCESS, JobStatus.FAILED}
    finally:
        await r.aclose()


async def test_one_job_with_unknown_status_does_not_break_listing(real_redis_url: str) -> None:
    settings = Settings(redis_url=real_redis_url)
    r = create_redis(real_redis_url)
    try:
        async with TaskQueue(real_redis_url, settings=settings) as q:
            odd = await q.enqueue(chaosjobs.ok, args=("odd",))
            good = await q.enqueue(chaosjobs.ok, args=("good",))
            await _hset(r, odd, status="zombie")
            assert good in [rec.id for rec in await q.list_jobs()]
    finally:
        await r.aclose()


async def test_pickled_job_is_refused_without_being_unpickled(real_redis_url: str) -> None:
    settings = Settings(redis_url=real_redis_url)
    conn = syncredis.Redis.from_url(real_redis_url)
    try:
        rq_job = RQQueue("default", connection=conn).enqueue("tests.chaos.chaosjobs.ok", "pickled")
        async with TaskQueue(real_redis_url, settings=settings) as q:
            good = await q.enqueue(chaosjobs.ok, args=("good",))
            await run_burst(redis=real_redis_url, settings=settings, accept_pickle=False)
            rec = await q.job(rq_job.id)
            assert rec.status == JobStatus.FAILED
            assert "pickle" in ((rec.error or "") + (rec.traceback or "")).lower(), rec
            assert await q.result(good) == "good"
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("func", "reason"),
    [
        ("tests.chaos.no_such_module:fn", "no_such_module"),
        ("tests.chaos.chaosjobs:no_such_function", "no_such_function"),
        (chaosjobs.not_json, "SerializationError"),
        (chaosjobs.raise_unprintable, "Unprintable"),
        (chaosjobs.async_raise_unprintable, "Unprintable"),
    ],
    ids=["module-missing", "function-missing", "return-not-json", "str-raises", "async-str-raises"],
)
async def test_job_that_cannot_run_or_be_recorded_fails_clearly(
    real_redis_url: str, func: Any, reason: str
) -> None:
    settings = Settings(redis_url=real_redis_url)
    async with TaskQueue(real_redis_url, settings=settings) as q:
        bad = await q.enqueue(func)
        good = await q.enqueue(chaosjobs.async_ok, args=("good",))
        await asyncio.wait_for(run_burst(redis=real_redis_url, settings=settings), 60)
        rec = await q.job(bad)
        assert rec.status == JobStatus.FAILED
        assert reason in (rec.error or "") + (rec.traceback or ""), rec
        assert await q.result(good) == "good"


async def test_recorder_skips_malformed_stream_entries(real_redis_url: str, database_url: str) -> None:
    settings = Settings(redis_url=real_redis_url, database_url=database_url)
    r = create_redis(real_redis_url)
    life, elog = _keys.lifecycle_stream("rq"), _keys.event_log_stream("rq")
    garbage: list[dict[str, Any]] = [
        {"nonsense": "1"},
        {"kind": "exploded", "job_id": "j-bad-kind"},
        {"kind": "started", "job_id": "j-bad-time", "started_at": "not a number"},
        {"kind": "success", "job_id": "j-bad-attempt", "attempt": "first"},
        {"kind": "success"},
        {"kind": "success", "job_id": "x" * 5000, "queue": "default"},  # longer than the column
        {"kind": b"\xff\xfe", "job_id": b"\xff"},
    ]
    event_garbage: list[dict[str, Any]] = [
        {"nonsense": "1"},
        {"event": "{not json"},
        {"event": '{"id": 1}'},
        {"event": '["a", "list"]'},
        {"data": b"\xff\xfe"},
    ]
    try:
        async with (
            Database(database_url, auto_migrate=True) as db,
            Recorder(real_redis_url, db=db, settings=settings, flush_interval=0.05) as recorder,
        ):
            for fields in garbage:
                await r.xadd(life, fields)
            for fields in event_garbage:
                await r.xadd(elog, fields)
            good = LifecycleRecord(Lifecycle.SUCCESS, job_id="j-good", queue="default", ended_at=1.7e9)
            await r.xadd(life, good.encode())  # type: ignore[arg-type]
            async with TaskQueue(real_redis_url, settings=settings) as q:  # and a real job end to end
                job_id = await q.enqueue(chaosjobs.ok, args=("recorded",))
                await run_burst(redis=real_redis_url, settings=settings)
            repo = ExecutionRepository(db)

            async def recorded() -> bool:
                await recorder.flush()
                page = await repo.list(limit=100)
                return {"j-good", job_id} <= {row.job_id for row in page.items}

            await eventually(recorded, 30, "the good entries to be recorded after the garbage")
            assert (await repo.get(job_id)).status == "success"
            assert (await EventRepository(db).list()).items == []  # no garbage event stored
            assert await recorder.backlog() == {} or not any((await recorder.backlog()).values())
    finally:
        await r.aclose()


async def test_subscriber_survives_garbage_on_its_channels(real_redis_url: str) -> None:
    from asyncsched.events import Event, EventBus

    settings = Settings(redis_url=real_redis_url)
    got: list[Event] = []
    r = create_redis(real_redis_url)
    try:
        async with EventBus(real_redis_url, settings=settings, agent_name="victim") as bus:
            await bus.subscribe("victim", "*", got.append)
            channels = [_keys.broadcast_event_channel("rq"), _keys.agent_event_channel("rq", "victim")]
            for channel in channels:
                for junk in (b"", b"\xff\xfe\x00", b"{not json", b"[]", b"42", b'{"event_type": 1}', b"null"):
                    await r.publish(channel, junk)
            await bus.publish("chaos.ok", "victim", {"n": 1}, target_agent="victim")
            await eventually(lambda: got, 30, "the good event after the garbage")
            assert [e.event_type for e in got] == ["chaos.ok"]
    finally:
        await r.aclose()


BAD_YAML = """\
tasks:
  - name: ok_task
    type: interval
    schedule: "5 minutes"
    function: "tests.chaos.chaosjobs:ok"
  - name: bad_cron
    type: cron
    schedule: "61 * * * *"
    function: "tests.chaos.chaosjobs:ok"
  - name: bad_interval
    type: interval
    schedule: "every now and then"
    function: "tests.chaos.chaosjobs:ok"
  - name: bad_function
    type: interval
    schedule: "5 minutes"
    function: "tests.chaos.no_such_module:fn"
  - name: bad_type
    type: sometimes
    schedule: "5 minutes"
    function: "tests.chaos.chaosjobs:ok"
  - name: bad_zone
    type: cron
    schedule: "0 9 * * *"
    timezone: Mars/Olympus_Mons
    function: "tests.chaos.chaosjobs:ok"
  - name: bad_fields
    type: interval
    schedule: "5 minutes"
    function: "tests.chaos.chaosjobs:ok"
    args: "not a list"
    kwargs: [1, 2]
    colour: blue
  - name: ok_task
    type: interval
    schedule: "1 minute"
    function: "tests.chaos.chaosjobs:ok"
  - type: interval
    schedule: "5 minutes"
    function: "tests.chaos.chaosjobs:ok"
"""


async def test_tasks_yaml_with_every_error_is_one_report_and_registers_nothing(
    database_url: str, tmp_path: Path
) -> None:
    from asyncsched.scheduler import TaskScheduler

    path = tmp_path / "tasks.yaml"
    path.write_text(BAD_YAML)
    settings = Settings(redis_url="memory://chaos-yaml", database_url=database_url)
    async with Database(database_url, auto_migrate=True) as db, TaskScheduler(settings=settings, db=db) as s:
        with pytest.raises(TaskDefinitionError) as info:
            await s.register_file(path, "chaos")
        problems = info.value.problems
        text = str(info.value)
        expected = {  # task -> field (line of the task's entry or of the field)
            "bad_cron": "schedule",
            "bad_interval": "schedule",
            "bad_function": "function",
            "bad_type": "type",
            "bad_zone": "timezone",
        }
        for task, field in expected.items():
            hits = [p for p in problems if p.task == task and p.field == field]
            assert hits, f"no problem for {task}.{field} in:\n{text}"
            assert all(p.file == str(path) and p.line for p in hits), hits
        fields = {p.field for p in problems if p.task == "bad_fields"}
        assert {"args", "kwargs", "colour"} <= fields, text
        assert any(p.task == "ok_task" and "duplicate" in p.message.lower() for p in problems), text
        assert any(p.field == "name" for p in problems), text  # the nameless task
        assert await s.list_tasks() == []
