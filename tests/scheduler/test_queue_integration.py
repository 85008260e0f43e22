"""Fired ticks become real jobs of the queue (RQ format), visible with status; duplicates are impossible."""

from __future__ import annotations

from datetime import UTC, datetime

from asyncsched.config import Settings
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.scheduler import TaskScheduler, job_id_for

from .conftest import FUNCTION, Clock


async def test_ticks_are_enqueued_as_jobs_with_status(sched_settings: Settings, clock: Clock) -> None:
    async with (
        TaskQueue(settings=sched_settings) as queue,
        TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as scheduler,
    ):
        task = await scheduler.register_task(
            name="report",
            type="cron",
            schedule="* * * * *",
            function=FUNCTION,
            kwargs={"n": 1},
            queue="reports",
        )
        clock.advance(minutes=1)
        (firing,) = await scheduler.run_pending()
        assert await queue.status(firing.job_id) == JobStatus.QUEUED
        record = await queue.job(firing.job_id)
        assert record.agent_name == "test-agent"
        assert record.task_name == "report"
        assert record.scheduled_task_id == task.id
        assert record.queue == "reports"
        assert record.kwargs == {"n": 1}
        # a run of the same tick enqueued again (lease recovery after a slow enqueue) is the same job
        assert await scheduler._enqueue(task, firing.job_id, firing.tick) == firing.job_id
        assert [j.id for j in await queue.list_jobs("reports")] == [firing.job_id]
        manual = await scheduler.run_now(task.id)
        assert await queue.status(manual) == JobStatus.QUEUED
        assert len(await queue.list_jobs("reports")) == 2


async def test_default_queue_is_built_on_the_schedulers_redis(sched_settings: Settings, clock: Clock) -> None:
    async with TaskScheduler(settings=sched_settings, clock=clock) as scheduler:
        task = await scheduler.register_task(
            name="t",
            type="interval",
            schedule="10 seconds",
            function=FUNCTION,
            retry={"max": 2, "interval": 5},
        )
        clock.advance(seconds=10)
        (firing,) = await scheduler.run_pending()
        assert firing.job_id == job_id_for(task.id, datetime(2026, 6, 1, 12, 0, 10, tzinfo=UTC))
        async with TaskQueue(settings=sched_settings) as queue:
            record = await queue.job(firing.job_id)
            assert record.status == JobStatus.QUEUED
            assert record.retries_left == 2


async def test_a_fired_tick_runs_on_a_worker_and_reports_success(
    sched_settings: Settings, clock: Clock
) -> None:
    from asyncsched.worker import Worker

    async with (
        TaskQueue(settings=sched_settings) as queue,
        TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as scheduler,
    ):
        await scheduler.register_task(
            name="t", type="interval", schedule="1 minute", function=FUNCTION, args=[7], kwargs={"k": "v"}
        )
        clock.advance(minutes=1)
        (firing,) = await scheduler.run_pending()
        async with Worker(["default"], settings=sched_settings, burst=True) as worker:
            await worker.run()
        assert await queue.status(firing.job_id) == JobStatus.SUCCESS
        assert await queue.result(firing.job_id) == {"args": [7], "kwargs": {"k": "v"}}
