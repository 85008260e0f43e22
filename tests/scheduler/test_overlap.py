"""``overlap``: a tick whose task's previous run is still queued or running is skipped (and recorded),
held (``queue``: it runs once that run ended; at most one waits) or run alongside (``allow``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from asyncsched import _keys
from asyncsched._lifecycle import unpack
from asyncsched.config import Settings
from asyncsched.exceptions import TaskDefinitionError
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.scheduler import TaskScheduler, job_id_for
from asyncsched.scheduler._definition import build_task
from asyncsched.store import Database, ExecutionRepository, Recorder

from .conftest import FUNCTION, Clock


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 6, 1, hour, minute, second, tzinfo=UTC)


async def _burst(settings: Settings) -> None:
    from asyncsched.worker import Worker

    async with Worker(["default"], settings=settings, burst=True) as worker:
        await worker.run()


async def _skipped(queue: TaskQueue) -> list[dict[str, str]]:
    rows = await queue.redis.xrange(_keys.lifecycle_stream("rq"))
    records = [unpack(fields) for _id, fields in rows]  # (either record format)
    return [r for r in records if r["kind"] == "skipped"]


async def test_skip_is_the_default_and_is_recorded(sched_settings: Settings, clock: Clock) -> None:
    async with (
        TaskQueue(settings=sched_settings) as queue,
        TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as scheduler,
    ):
        task = await scheduler.register_task(
            name="t", type="interval", schedule="1 minute", function=FUNCTION
        )
        assert "overlap" not in task.options  # the default is not stored
        clock.now = at(12, 1)
        (first,) = await scheduler.run_pending()
        clock.now = at(12, 2)
        assert await scheduler.run_pending() == []  # the 12:01 run is still queued
        assert not await queue.redis.exists(f"rq:job:{job_id_for(task.id, at(12, 2))}")
        (skip,) = await _skipped(queue)
        assert skip["job_id"] == job_id_for(task.id, at(12, 2))
        assert (skip["scheduled_task_id"], skip["task_name"], skip["agent_name"]) == (
            task.id,
            "t",
            "test-agent",
        )
        assert first.job_id in skip["error"]
        assert "queued" in skip["error"]
        assert "overlap: skip" in skip["error"]
        await _burst(sched_settings)  # the 12:01 run ends: the next tick runs
        clock.now = at(12, 3)
        (third,) = await scheduler.run_pending()
        assert third.job_id == job_id_for(task.id, at(12, 3))
        assert len(await _skipped(queue)) == 1

        async with Database(sched_settings.database_url) as db:
            await Recorder(queue.redis, db=db, settings=sched_settings, consumer="t").flush()
            row = await ExecutionRepository(db).get(skip["job_id"])
            assert (row.status, row.scheduled_task_id, row.error) == ("skipped", task.id, skip["error"])
            assert row.started_at is None


async def test_a_failed_previous_run_does_not_block(sched_settings: Settings, clock: Clock) -> None:
    async with (
        TaskQueue(settings=sched_settings) as queue,
        TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as scheduler,
    ):
        task = await scheduler.register_task(
            name="t", type="interval", schedule="1 minute", function="tests.jobs:fail"
        )
        clock.now = at(12, 1)
        (first,) = await scheduler.run_pending()
        await _burst(sched_settings)
        assert await queue.status(first.job_id) == JobStatus.FAILED
        clock.now = at(12, 2)
        assert [f.job_id for f in await scheduler.run_pending()] == [job_id_for(task.id, at(12, 2))]


async def test_queue_holds_one_run_until_the_previous_ended(sched_settings: Settings, clock: Clock) -> None:
    async with (
        TaskQueue(settings=sched_settings) as queue,
        TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as scheduler,
    ):
        task = await scheduler.register_task(
            name="t", type="interval", schedule="1 minute", function=FUNCTION, overlap="queue"
        )
        assert task.options["overlap"] == "queue"
        clock.now = at(12, 1)
        (first,) = await scheduler.run_pending()
        clock.now = at(12, 2)
        (held,) = await scheduler.run_pending()
        assert await queue.status(held.job_id) == JobStatus.DEFERRED  # waits for the 12:01 run
        clock.now = at(12, 3)
        assert await scheduler.run_pending() == []  # one run waits already: this tick is skipped
        (skip,) = await _skipped(queue)
        assert skip["job_id"] == job_id_for(task.id, at(12, 3))
        assert held.job_id in skip["error"]
        await _burst(sched_settings)  # runs 12:01, which releases 12:02
        assert await queue.status(first.job_id) == JobStatus.SUCCESS
        assert await queue.status(held.job_id) == JobStatus.SUCCESS
        clock.now = at(12, 4)
        (fourth,) = await scheduler.run_pending()
        assert await queue.status(fourth.job_id) == JobStatus.QUEUED


class _Flaky:
    """The real queue, failing the next ``fail`` enqueues (a claimer that dies before its enqueue)."""

    def __init__(self, queue: TaskQueue) -> None:
        self.queue, self.fail = queue, 0

    async def enqueue(self, func: Any, **kwargs: Any) -> str:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("queue down")
        result: str = await self.queue.enqueue(func, **kwargs)
        return result


async def test_a_held_run_taken_over_after_its_lease_still_waits(
    sched_settings: Settings, clock: Clock
) -> None:
    async with TaskQueue(settings=sched_settings) as queue:
        flaky = _Flaky(queue)
        async with TaskScheduler(settings=sched_settings, queue=flaky, clock=clock) as scheduler:
            task = await scheduler.register_task(
                name="t", type="interval", schedule="1 minute", function=FUNCTION, overlap="queue"
            )
            clock.now = at(12, 1)
            (first,) = await scheduler.run_pending()
            clock.now = at(12, 2)
            flaky.fail = 1
            assert await scheduler.run_pending() == []  # held, but its enqueue failed: the lease remains
            clock.now = at(12, 3, 1)  # past the lease: the 12:02 run is taken over; 12:03 waits behind it
            (recovered,) = await scheduler.run_pending()
            assert recovered.job_id == job_id_for(task.id, at(12, 2))
            assert await queue.status(recovered.job_id) == JobStatus.DEFERRED
            (skip,) = await _skipped(queue)
            assert skip["job_id"] == job_id_for(task.id, at(12, 3))
            await _burst(sched_settings)
            assert await queue.status(first.job_id) == JobStatus.SUCCESS
            assert await queue.status(recovered.job_id) == JobStatus.SUCCESS


async def test_allow_runs_alongside(sched_settings: Settings, clock: Clock) -> None:
    async with (
        TaskQueue(settings=sched_settings) as queue,
        TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as scheduler,
    ):
        await scheduler.register_task(
            name="t", type="interval", schedule="1 minute", function=FUNCTION, overlap="allow"
        )
        for minute in (1, 2, 3):
            clock.now = at(12, minute)
            (firing,) = await scheduler.run_pending()
            assert await queue.status(firing.job_id) == JobStatus.QUEUED
        assert await _skipped(queue) == []


async def test_replicas_take_one_decision_per_tick(sched_settings: Settings, clock: Clock) -> None:
    """Three replicas race for each tick: every tick is run or skipped exactly once, never both."""
    async with TaskQueue(settings=sched_settings) as queue:
        schedulers = [TaskScheduler(settings=sched_settings, queue=queue, clock=clock) for _ in range(3)]
        try:
            task = await schedulers[0].register_task(
                name="t", type="interval", schedule="1 minute", function=FUNCTION
            )
            fired = []
            for minute in range(1, 6):
                clock.now = at(12, minute)
                results = await asyncio.gather(*(s.run_pending() for s in schedulers))
                fired += [f.job_id for result in results for f in result]
            skipped = [r["job_id"] for r in await _skipped(queue)]
            assert fired == [job_id_for(task.id, at(12, 1))]
            assert skipped == [job_id_for(task.id, at(12, m)) for m in range(2, 6)]
        finally:
            for s in schedulers:
                await s.aclose()


@pytest.mark.parametrize("value", ["sometimes", "", 1, True])
def test_a_bad_overlap_names_the_field(value: object) -> None:
    with pytest.raises(TaskDefinitionError) as info:
        build_task(
            agent_name="a", name="t", type="interval", schedule="1 minute", function=FUNCTION, overlap=value
        )
    assert "overlap" in str(info.value)
    assert "skip, queue or allow" in str(info.value)


@pytest.mark.slow
async def test_the_example_runs() -> None:
    from examples.overlap import main

    runs = await main(seconds=4.5)
    assert runs["skipper"][0] == "success"
    assert "skipped" in runs["skipper"]
    assert runs["queuer"][:2] == ["success", "success"]  # the second tick waited for the first, then ran
    assert "skipped" in runs["queuer"]
