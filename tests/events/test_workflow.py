"""The spec's "Example: Complete Workflow", end to end on every backend.

1. a task is defined in ``tasks.yaml``; 2. its function is a sync service function; 3. the app loads and
registers the tasks; 4. the scheduler fires it and a worker runs it (in a thread); 5. the task publishes an
event on completion (sync facade, from the worker thread) and the worker's lifecycle feed becomes
``task.completed``; 6. another agent's subscriber reacts to both.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from asyncsched.config import Settings, set_settings
from asyncsched.events import Event, EventBus, LifecyclePublisher
from asyncsched.scheduler import TaskScheduler
from asyncsched.store import Database
from asyncsched.testing import run_burst

from .conftest import Collector

TASKS_YAML = """
tasks:
  - name: process_pending_emails
    description: Process pending emails every 5 minutes
    enabled: true
    type: interval
    schedule: "5 minutes"
    function: "tests.events.workflow_tasks:process_pending_emails_task"
    kwargs:
      batch_size: 10
"""


@pytest.fixture
def workflow_settings(redis_url: str, database_url: str) -> Iterator[Settings]:
    settings = Settings(redis_url=redis_url, database_url=database_url, agent="email-agent")
    set_settings(settings)  # the task's EventBus() uses the process-wide settings, as in the spec
    yield settings
    set_settings(None)


async def test_scheduled_task_publishes_on_completion_and_another_agent_reacts(
    workflow_settings: Settings, tmp_path: Path, collector: Collector
) -> None:
    settings = workflow_settings
    tasks_file = tmp_path / "tasks.yaml"
    tasks_file.write_text(TASKS_YAML)
    reactions: list[str] = []

    async def support_bot(event: Event) -> None:  # the other app, reacting
        reactions.append(f"{event.event_type} from {event.source_agent}")
        await collector.async_cb(event)

    async with Database(settings=settings) as db:
        await db.migrate()
        async with EventBus(settings=settings) as bus, LifecyclePublisher(bus=bus):
            await bus.subscribe("support-bot", "email.*", support_bot)
            await bus.subscribe("support-bot", "task.completed", support_bot)

            async with TaskScheduler(settings=settings, db=db) as scheduler:
                for task in await scheduler.load_tasks_from_yaml(tasks_file, agent_name="email-agent"):
                    await scheduler.register_task(task)
                fired = await scheduler.run_pending(now=datetime.now(UTC) + timedelta(minutes=6))
            assert len(fired) == 1

            await run_burst(settings=settings)  # the worker runs the sync task in a thread
            events = await collector.wait(2, timeout=30)

    by_type = {e.event_type: e for e in events}
    assert by_type["email.batch_processed"].source_agent == "email-agent"
    assert by_type["email.batch_processed"].payload == {"batch_size": 10}
    completed = by_type["task.completed"]
    assert completed.source_agent == "email-agent"
    assert completed.payload["task_name"] == "process_pending_emails"
    assert completed.payload["status"] == "success"
    assert completed.payload["function"] == "tests.events.workflow_tasks:process_pending_emails_task"
    assert sorted(reactions) == ["email.batch_processed from email-agent", "task.completed from email-agent"]
