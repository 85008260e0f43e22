"""TaskScheduler's API on every backend: register (idempotent), list, get, enable/disable, edit, delete."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from asyncsched import TaskDefinitionError, TaskNotFound
from asyncsched.scheduler import TaskScheduler, parse_schedule
from asyncsched.store import ScheduledTask

from .conftest import FUNCTION, Clock, RecordingQueue
from .test_yaml import SPEC_EXAMPLE


async def test_register_same_file_twice_updates_never_duplicates(
    scheduler: TaskScheduler, tmp_path: Path
) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(SPEC_EXAMPLE)
    first = [
        await scheduler.register_task(t) for t in await scheduler.load_tasks_from_yaml(path, "email-agent")
    ]
    second = [
        await scheduler.register_task(t) for t in await scheduler.load_tasks_from_yaml(path, "email-agent")
    ]
    assert [t.id for t in first] == [t.id for t in second]
    assert len(await scheduler.list_tasks()) == 2
    # an edited file updates in place
    path.write_text(SPEC_EXAMPLE.replace('"5 minutes"', '"10 minutes"'))
    for task in await scheduler.load_tasks_from_yaml(path, "email-agent"):
        await scheduler.register_task(task)
    tasks = await scheduler.list_tasks("email-agent")
    assert len(tasks) == 2
    assert {t.name: t.schedule for t in tasks}["process_pending_emails"] == "10 minutes"


async def test_register_file_is_all_or_nothing_and_prunes(scheduler: TaskScheduler, tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(SPEC_EXAMPLE)
    assert len(await scheduler.register_file(path, "email-agent")) == 2
    path.write_text(
        SPEC_EXAMPLE + "  - name: broken\n    type: cron\n    schedule: nope\n    function: x:y\n"
    )
    with pytest.raises(TaskDefinitionError):
        await scheduler.register_file(path, "email-agent")
    assert len(await scheduler.list_tasks()) == 2
    path.write_text(SPEC_EXAMPLE.split("\n  - name: daily_report")[0] + "\n")
    kept = await scheduler.register_file(path, "email-agent")
    assert [t.name for t in kept] == ["process_pending_emails"]
    assert [t.name for t in await scheduler.list_tasks()] == ["process_pending_emails"]


async def test_crud(scheduler: TaskScheduler, clock: Clock) -> None:
    task = await scheduler.register_task(
        name="report", agent_name="a1", type="cron", schedule="0 9 * * *", function=FUNCTION, kwargs={"x": 1}
    )
    assert task.id
    assert task.next_run_at == datetime(2026, 6, 2, 9, tzinfo=UTC)  # clock: 2026-06-01 12:00 UTC
    await scheduler.register_task(
        name="report", agent_name="a2", type="interval", schedule="1 hour", function=FUNCTION
    )
    assert [t.agent_name for t in await scheduler.list_tasks()] == ["a1", "a2"]
    assert [t.name for t in await scheduler.list_tasks("a2")] == ["report"]
    assert (await scheduler.get_task(task.id)).name == "report"
    assert (await scheduler.get_task("report", "a1")).id == task.id
    with pytest.raises(TaskNotFound, match="pass agent_name"):
        await scheduler.get_task("report")
    with pytest.raises(TaskNotFound):
        await scheduler.get_task("nope")

    disabled = await scheduler.disable(task.id)
    assert disabled.enabled is False
    assert disabled.next_run_at is None
    assert await scheduler.index.score(task.id) is None
    enabled = await scheduler.enable("report", "a1")
    assert enabled.enabled is True
    assert await scheduler.index.score(task.id) is not None

    edited = await scheduler.update_task(task.id, schedule="30 10 * * *", kwargs={"x": 2})
    assert edited.schedule == "30 10 * * *"
    assert edited.kwargs == {"x": 2}
    assert edited.next_run_at == datetime(2026, 6, 2, 10, 30, tzinfo=UTC)
    with pytest.raises(TaskDefinitionError):
        await scheduler.update_task(task.id, schedule="not cron")

    removed = await scheduler.unregister_task("report", "a1")
    assert removed.id == task.id
    assert await scheduler.index.score(task.id) is None
    with pytest.raises(TaskNotFound):
        await scheduler.get_task(task.id)


async def test_next_runs_and_run_now(scheduler: TaskScheduler, queue: RecordingQueue) -> None:
    task = await scheduler.register_task(
        name="t", type="interval", schedule="30 seconds", function=FUNCTION, args=[1], retry=2, timeout=60
    )
    assert await scheduler.next_runs(task, 3) == [
        datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 1, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 1, 30, tzinfo=UTC),
    ]
    assert await scheduler.next_runs("t", 1) == [datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)]
    assert await scheduler.next_runs(parse_schedule("cron", "@daily"), 1) == [
        datetime(2026, 6, 2, tzinfo=UTC)
    ]
    job_id = await scheduler.run_now("t")
    assert job_id.startswith(f"sched-{task.id}-run-")
    (call,) = queue.calls
    assert call["func"] == FUNCTION
    assert call["agent_name"] == "test-agent"
    assert call["task_name"] == "t"
    assert call["scheduled_task_id"] == task.id
    assert call["args"] == (1,)
    assert call["timeout"] == 60
    assert call["unique"] is True


async def test_register_a_scheduled_task_object_built_in_code(scheduler: TaskScheduler) -> None:
    task = ScheduledTask(agent_name="code", name="n", type="cron", schedule="@hourly", function=FUNCTION)
    stored = await scheduler.register_task(task)
    assert stored.enabled is True
    assert stored.queue == "default"
    assert stored.next_run_at == datetime(2026, 6, 1, 13, tzinfo=UTC)


async def test_apscheduler_triggers_are_accepted(scheduler: TaskScheduler) -> None:
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    cron = await scheduler.register_task(
        name="cron",
        function=FUNCTION,
        trigger=CronTrigger(hour=9, day_of_week="mon-fri", timezone="Europe/Berlin"),
    )
    assert (cron.type, cron.schedule, cron.timezone) == (
        "cron",
        "0 9 * * mon,tue,wed,thu,fri",
        "Europe/Berlin",
    )
    assert cron.next_run_at == datetime(2026, 6, 2, 7, tzinfo=UTC)  # Tuesday 09:00 CEST
    anchor = datetime(2026, 6, 1, 11, 50, tzinfo=UTC)
    interval = await scheduler.register_task(
        name="every", function=FUNCTION, trigger=IntervalTrigger(minutes=15, start_date=anchor)
    )
    assert (interval.type, interval.schedule) == ("interval", "15 minutes")
    assert interval.next_run_at == datetime(2026, 6, 1, 12, 5, tzinfo=UTC)
    once = await scheduler.register_task(
        name="once", function=FUNCTION, trigger=DateTrigger(datetime(2026, 7, 1, 8, tzinfo=UTC))
    )
    assert once.type == "date"
    assert once.next_run_at == datetime(2026, 7, 1, 8, tzinfo=UTC)
    with pytest.raises(TaskDefinitionError, match="no cron equivalent"):
        await scheduler.register_task(name="x", function=FUNCTION, trigger=CronTrigger(day="last"))


async def test_sync_facade_runs_the_spec_snippet(sched_settings: object, tmp_path: Path) -> None:
    from asyncsched.sync import TaskScheduler as SyncTaskScheduler

    path = tmp_path / "tasks.yaml"
    path.write_text(SPEC_EXAMPLE)
    scheduler = SyncTaskScheduler(settings=sched_settings)  # type: ignore[arg-type]
    try:
        tasks = scheduler.load_tasks_from_yaml(str(path), agent_name="your-agent")
        for t in tasks:
            scheduler.register_task(t)
        for t in tasks:
            scheduler.register_task(t)
        assert [t.name for t in scheduler.list_tasks("your-agent")] == [
            "daily_report",
            "process_pending_emails",
        ]
        assert scheduler.disable("daily_report").enabled is False
        assert len(scheduler.next_runs("process_pending_emails", 2)) == 2
    finally:
        scheduler.close()


async def test_rename_keeps_the_id_and_a_clash_is_a_duplicate(scheduler: TaskScheduler) -> None:
    from asyncsched import DuplicateTask

    a = await scheduler.register_task(name="a", type="interval", schedule="1 hour", function=FUNCTION)
    await scheduler.register_task(name="b", type="interval", schedule="1 hour", function=FUNCTION)
    renamed = await scheduler.update_task(a.id, name="a2")
    assert (renamed.id, renamed.name) == (a.id, "a2")
    assert [t.name for t in await scheduler.list_tasks()] == ["a2", "b"]
    with pytest.raises(DuplicateTask):
        await scheduler.update_task(a.id, name="b")


async def test_default_scheduler_creates_the_embedded_database_on_first_use(tmp_path: Path) -> None:
    """The spec's `TaskScheduler()` with no database set up: the SQLite file is created and migrated."""
    from asyncsched.config import Settings as _Settings

    path = tmp_path / "fresh" / "first.db"
    settings = _Settings(redis_url="memory://first-use", database_url=f"sqlite+aiosqlite:///{path}")
    async with TaskScheduler(settings=settings) as scheduler:
        task = await scheduler.register_task(
            name="hello", agent_name="a", type="interval", schedule="5 minutes", function=FUNCTION
        )
        assert [t.name for t in await scheduler.list_tasks()] == [task.name]
    assert path.exists()
