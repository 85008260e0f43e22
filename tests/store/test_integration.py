"""The Recorder fed by the real producers: TaskQueue's lifecycle records and EventBus's persisted events."""

from __future__ import annotations

import redis.asyncio as aioredis

from asyncsched.config import Settings
from asyncsched.events import EventBus
from asyncsched.queue import TaskQueue
from asyncsched.store import Database, EventRepository, ExecutionRepository, Recorder, ScheduledTask


async def test_queue_records_become_executions(redis: aioredis.Redis, db: Database) -> None:
    settings = Settings()
    task = ScheduledTask(
        agent_name="mail", name="digest", type="interval", schedule="5 minutes", function="m:f"
    )
    async with db.session() as s, s.begin():
        s.add(task)
    async with TaskQueue(redis, settings=settings) as queue:
        adhoc = await queue.enqueue("tests.jobs:add", args=(1, 2), agent_name="mail", task_name="add")
        fired = await queue.enqueue(
            "tests.jobs:add", args=(3, 4), agent_name="mail", task_name="digest", scheduled_task_id=task.id
        )
        await queue.cancel(fired)
    await Recorder(redis, db=db, settings=settings, consumer="t").flush()
    repo = ExecutionRepository(db)
    first = await repo.get(adhoc)
    assert (first.status, first.agent_name, first.task_name, first.queue) == (
        "queued",
        "mail",
        "add",
        "default",
    )
    assert first.function == "tests.jobs:add"
    assert first.enqueued_at is not None
    assert first.scheduled_task_id is None
    second = await repo.get(fired)
    assert (second.status, second.scheduled_task_id) == ("cancelled", task.id)
    assert (await repo.list(agent_name="mail")).total == 2


async def test_persisted_events_become_event_messages(redis: aioredis.Redis, db: Database) -> None:
    settings = Settings()
    async with EventBus(redis, settings=settings, persist=True) as bus:
        sent = await bus.publish("email.processed", "mail", {"n": 3})
        await bus.publish("task.failed", "ops", target_agent="mail")
    await Recorder(redis, db=db, settings=settings, consumer="t").flush()
    repo = EventRepository(db)
    stored = await repo.get(sent.id)
    assert (stored.event_type, stored.source_agent, stored.payload) == ("email.processed", "mail", {"n": 3})
    assert stored.created_at == sent.created_at
    assert {e.event_type for e in (await repo.list(agent="mail")).items} == {"email.processed", "task.failed"}
