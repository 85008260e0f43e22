"""Lifecycle events: the lifecycle feed becomes ``task.*`` events; ``system.*`` events; persistence to SQL."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import redis.asyncio as aioredis

from asyncsched._keys import lifecycle_stream
from asyncsched._lifecycle import Lifecycle, LifecycleRecord
from asyncsched.config import Settings
from asyncsched.events import (
    Event,
    EventBus,
    LifecyclePublisher,
    lifecycle_event,
    publish_system_event,
    system_events,
)
from asyncsched.events._lifecycle import GROUP
from asyncsched.store import Database, EventRepository, Recorder

T0 = 1_790_000_000.0


def _record(kind: Lifecycle, **fields: object) -> LifecycleRecord:
    base: dict[str, object] = {
        "job_id": "job-1",
        "queue": "default",
        "agent_name": "email-agent",
        "task_name": "process_pending_emails",
        "function": "app.services.email_service:process_pending_emails_task",
        "enqueued_at": T0,
    }
    base.update(fields)
    return LifecycleRecord(kind, **base)  # type: ignore[arg-type]


def test_lifecycle_event_payload() -> None:
    record = _record(Lifecycle.SUCCESS, worker="w1", started_at=T0 + 1, ended_at=T0 + 3.5, attempt=2)
    event = lifecycle_event(record)
    assert event is not None
    assert event.event_type == "task.completed"
    assert event.source_agent == "email-agent"
    assert event.target_agent is None
    assert event.payload == {
        "job_id": "job-1",
        "queue": "default",
        "agent_name": "email-agent",
        "task_name": "process_pending_emails",
        "function": "app.services.email_service:process_pending_emails_task",
        "scheduled_task_id": None,
        "status": "success",
        "attempt": 2,
        "worker": "w1",
        "enqueued_at": "2026-09-21T14:13:20+00:00",
        "started_at": "2026-09-21T14:13:21+00:00",
        "ended_at": "2026-09-21T14:13:23.500000+00:00",
        "duration": 2.5,
        "error": None,
        "will_retry": False,
    }
    event.to_json()  # serializable


@pytest.mark.parametrize(
    ("kind", "event_type", "status"),
    [
        (Lifecycle.QUEUED, "task.queued", "queued"),
        (Lifecycle.STARTED, "task.started", "running"),
        (Lifecycle.SUCCESS, "task.completed", "success"),
        (Lifecycle.FAILED, "task.failed", "failed"),
        (Lifecycle.RETRY, "task.failed", "failed"),
        (Lifecycle.CANCELLED, "task.cancelled", "cancelled"),
    ],
)
def test_every_lifecycle_kind_maps_to_its_event(kind: Lifecycle, event_type: str, status: str) -> None:
    event = lifecycle_event(_record(kind))
    assert event is not None
    assert (event.event_type, event.payload["status"]) == (event_type, status)
    assert event.payload["will_retry"] is (kind is Lifecycle.RETRY)


def test_kinds_without_event_and_jobs_without_agent() -> None:
    assert lifecycle_event(_record(Lifecycle.SCHEDULED)) is None
    assert lifecycle_event(_record(Lifecycle.DEFERRED)) is None
    event = lifecycle_event(_record(Lifecycle.QUEUED, agent_name=None))
    assert event is not None
    assert event.source_agent == "asyncsched"
    event = lifecycle_event(_record(Lifecycle.QUEUED, agent_name="not a valid name"))
    assert event is not None
    assert event.source_agent == "asyncsched"


async def test_publisher_turns_the_lifecycle_stream_into_events(
    bus_settings: Settings, redis: aioredis.Redis
) -> None:
    stream = lifecycle_stream(bus_settings.key_prefix)
    records = [
        _record(Lifecycle.SCHEDULED),
        _record(Lifecycle.QUEUED),
        _record(Lifecycle.STARTED, worker="w1", started_at=T0 + 1),
        _record(Lifecycle.SUCCESS, worker="w1", started_at=T0 + 1, ended_at=T0 + 2),
        _record(Lifecycle.FAILED, job_id="job-2", error="ValueError: bad"),
    ]
    async with EventBus(settings=bus_settings, agent_name="support-bot") as listener:
        async with LifecyclePublisher(settings=bus_settings) as publisher:
            for record in records:
                await redis.xadd(stream, record.encode())  # what the queue and worker write
            got = [await listener.listen(timeout=15) for _ in range(4)]
        assert publisher.published == 4
        assert [(e.event_type, e.payload["job_id"]) for e in got if e] == [
            ("task.queued", "job-1"),
            ("task.started", "job-1"),
            ("task.completed", "job-1"),
            ("task.failed", "job-2"),
        ]
        assert got[3] is not None
        assert got[3].payload["error"] == "ValueError: bad"
        assert await listener.listen(timeout=0) is None  # scheduled: nothing published
    pending = await redis.xpending(stream, GROUP)
    assert pending["pending"] == 0  # acknowledged after publishing


async def test_publisher_reads_records_of_the_earlier_format(
    bus_settings: Settings, redis: aioredis.Redis
) -> None:
    """Records the previous version wrote (one stream field per field, still in the stream after an
    upgrade) are published as the packed ones are, with the same payload."""
    stream = lifecycle_stream(bus_settings.key_prefix)
    earlier = _record(Lifecycle.FAILED, job_id="job-e", worker="w1", error="ValueError: bad", attempt=2)
    packed = _record(Lifecycle.FAILED, job_id="job-p", worker="w1", error="ValueError: bad", attempt=2)
    fields = {
        f.name: str(v) for f in dataclasses.fields(earlier) if (v := getattr(earlier, f.name)) is not None
    }
    async with EventBus(settings=bus_settings, agent_name="support-bot") as listener:
        async with LifecyclePublisher(settings=bus_settings) as publisher:
            await redis.xadd(stream, fields)  # type: ignore[arg-type]
            await redis.xadd(stream, packed.encode())  # type: ignore[arg-type]
            got = [await listener.listen(timeout=15) for _ in range(2)]
        assert publisher.published == 2
    assert got[0] is not None
    assert got[1] is not None
    assert got[0].event_type == got[1].event_type == "task.failed"
    assert got[0].payload == {**got[1].payload, "job_id": "job-e"}
    assert (got[0].payload["error"], got[0].payload["attempt"]) == ("ValueError: bad", 2)


async def test_publisher_does_not_replay_old_history_but_resumes_its_group(
    bus_settings: Settings, redis: aioredis.Redis
) -> None:
    stream = lifecycle_stream(bus_settings.key_prefix)
    await redis.xadd(stream, _record(Lifecycle.QUEUED, job_id="before-first-start").encode())
    async with EventBus(settings=bus_settings, agent_name="a") as listener:
        async with LifecyclePublisher(settings=bus_settings):
            pass
        # Written while no publisher runs: the group remembers its position.
        await redis.xadd(stream, _record(Lifecycle.QUEUED, job_id="while-down").encode())
        async with LifecyclePublisher(settings=bus_settings):
            got = await listener.listen(timeout=15)
        assert got is not None
        assert got.payload["job_id"] == "while-down"
        assert await listener.listen(timeout=0) is None


async def test_publisher_redelivers_records_of_a_dead_publisher(
    bus_settings: Settings, redis: aioredis.Redis
) -> None:
    stream = lifecycle_stream(bus_settings.key_prefix)
    async with EventBus(settings=bus_settings, agent_name="a") as listener:
        async with LifecyclePublisher(settings=bus_settings):
            pass
        await redis.xadd(stream, _record(Lifecycle.CANCELLED, job_id="orphan").encode())
        await redis.xreadgroup(GROUP, "dead-publisher", {stream: ">"})  # read, never acknowledged
        async with LifecyclePublisher(settings=bus_settings, claim_idle=0.2):
            got = await listener.listen(timeout=15)
        assert got is not None
        assert (got.event_type, got.payload["job_id"]) == ("task.cancelled", "orphan")


async def test_publisher_through_a_given_bus_skips_malformed_records(
    bus_settings: Settings, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    stream = lifecycle_stream(bus_settings.key_prefix)
    async with EventBus(settings=bus_settings, agent_name="a") as bus:
        async with LifecyclePublisher(bus=bus) as publisher:
            with caplog.at_level(logging.ERROR, logger="asyncsched.events"):
                await redis.xadd(stream, {"kind": "exploded", "job_id": "x"})
                await redis.xadd(stream, _record(Lifecycle.QUEUED, job_id="fine").encode())
                got = await bus.listen(timeout=15)
            assert publisher.bus is bus
        assert got is not None
        assert got.payload["job_id"] == "fine"
    assert any("malformed lifecycle record" in r.getMessage() for r in caplog.records)


async def test_system_events(bus_settings: Settings) -> None:
    async with EventBus(settings=bus_settings, agent_name="ops") as bus:
        started = await publish_system_event(bus, "startup", "worker", "email-agent", queues=["default"])
        stopped = await publish_system_event(bus, "shutdown", "scheduler")
        got = [await bus.listen(timeout=10) for _ in range(2)]
        with pytest.raises(ValueError, match="startup"):
            await publish_system_event(bus, "reboot", "worker")  # type: ignore[arg-type]
    assert got == [started, stopped]
    assert started.event_type == "system.startup"
    assert started.source_agent == "email-agent"
    assert started.payload["component"] == "worker"
    assert started.payload["queues"] == ["default"]
    assert isinstance(started.payload["pid"], int)
    assert stopped.event_type == "system.shutdown"
    assert stopped.source_agent == "asyncsched"


async def test_system_events_around_a_component(bus_settings: Settings) -> None:
    started: Event | None = None

    async def crashing_component(bus: EventBus) -> None:
        nonlocal started
        async with system_events(bus, "scheduler", "email-agent", replica=2):
            started = await bus.listen(timeout=10)
            raise KeyError("crash")

    async with EventBus(settings=bus_settings, agent_name="ops") as bus:
        with pytest.raises(KeyError):
            await crashing_component(bus)
        stopped = await bus.listen(timeout=10)
    assert started is not None
    assert stopped is not None
    assert (started.event_type, stopped.event_type) == ("system.startup", "system.shutdown")
    assert stopped.payload["component"] == "scheduler"
    assert stopped.payload["replica"] == 2


async def test_persisted_events_become_event_message_rows(redis_url: str, database_url: str) -> None:
    settings = Settings(redis_url=redis_url, database_url=database_url)
    async with Database(settings=settings) as db:
        await db.migrate()
        async with (
            Recorder(settings=settings, db=db) as recorder,
            EventBus(settings=settings, persist=True) as bus,
        ):
            sent = [
                await bus.publish("email.batch_processed", "email-agent", {"batch_size": 10}),
                await bus.publish("report.ready", "report-agent", {"id": 3}, target_agent="support-bot"),
            ]
            await recorder.flush()
        page = await EventRepository(db).list(limit=10)
    rows = sorted(page.items, key=lambda row: row.created_at)
    assert [Event.from_model(row) for row in rows] == sent
    assert sent[0].to_model().payload == rows[0].payload


def test_event_model_round_trip() -> None:
    event = Event.create("x.y", "a", {"k": [1, 2]}, target_agent="b")
    model = event.to_model()
    assert (model.id, model.event_type, model.source_agent, model.target_agent, model.payload) == (
        event.id,
        "x.y",
        "a",
        "b",
        {"k": [1, 2]},
    )
    assert Event.from_model(model) == event
    assert Event.from_json(event.to_json()) == event


async def test_publisher_outside_async_with_is_a_clear_error(bus_settings: Settings) -> None:
    publisher = LifecyclePublisher(settings=bus_settings)
    with pytest.raises(RuntimeError, match="async with"):
        await publisher.run_once()
