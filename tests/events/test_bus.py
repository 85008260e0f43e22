"""Live delivery on pub/sub, on every backend: targeting, broadcast, wildcards, callbacks, listen, events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from asyncsched import ConfigurationError, SerializationError
from asyncsched._keys import agent_event_stream, broadcast_event_stream, event_log_stream
from asyncsched._redis import is_cluster
from asyncsched.config import Settings
from asyncsched.events import Event, EventBus
from asyncsched.events._stream import EventStream

from ..servers import RedisServer
from .conftest import Collector

pytestmark = pytest.mark.cluster  # the bus suite runs on a Redis Cluster too


async def test_targeted_event_reaches_only_its_agent_and_broadcast_reaches_all(
    bus_settings: Settings, collector: Collector, collector2: Collector
) -> None:
    async with EventBus(settings=bus_settings) as bus:
        await bus.subscribe("support-bot", "*", collector.async_cb)
        await bus.subscribe("email-agent", "*", collector2.async_cb)

        await bus.publish("email.processed", "email-agent", {"n": 1}, target_agent="support-bot")
        await bus.publish("report.ready", "report-agent", {"n": 2}, target_agent="email-agent")
        await bus.publish("system.startup", "asyncsched")

        await collector.wait(2)
        await collector2.wait(2)
        assert sorted(collector.types()) == ["email.processed", "system.startup"]
        assert sorted(collector2.types()) == ["report.ready", "system.startup"]
        targeted = next(e for e in collector.events if e.event_type == "email.processed")
        assert targeted.target_agent == "support-bot"
        assert targeted.source_agent == "email-agent"
        assert targeted.payload == {"n": 1}
        broadcast = next(e for e in collector.events if e.event_type == "system.startup")
        assert broadcast.target_agent is None


async def test_publish_returns_the_envelope_that_is_delivered(bus_settings: Settings) -> None:
    async with (
        EventBus(settings=bus_settings, agent_name="b") as listener,
        EventBus(settings=bus_settings) as bus,
    ):
        sent = await bus.publish("task.completed", "email-agent", {"task_id": "123"}, target_agent="b")
        got = await listener.listen(timeout=10)
    assert got == sent
    assert isinstance(sent, Event)
    assert len(sent.id) == 32
    assert sent.created_at.tzinfo is UTC
    assert (datetime.now(UTC) - sent.created_at).total_seconds() < 60


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("task.completed", ["task.completed"]),
        ("task.*", ["task.completed", "task.failed"]),
        ("*", ["email.sent", "end.marker", "task.completed", "task.failed"]),
        ("*.failed", ["task.failed"]),
        ("task.[cf]*", ["task.completed", "task.failed"]),
    ],
)
async def test_wildcard_subscriptions(
    bus_settings: Settings, collector: Collector, pattern: str, expected: list[str]
) -> None:
    async with EventBus(settings=bus_settings, agent_name="a") as bus:
        await bus.subscribe("a", pattern, collector.async_cb)
        for event_type in ("task.completed", "email.sent", "task.failed"):
            await bus.publish(event_type, "src", target_agent="a")
        await bus.publish("end.marker", "src", target_agent="a")
        # listen() sees every event in order: once the marker arrived, every callback was started.
        seen = [await bus.listen(timeout=10) for _ in range(4)]
        assert [e.event_type for e in seen if e] == [
            "task.completed",
            "email.sent",
            "task.failed",
            "end.marker",
        ]
        await collector.wait(len(expected))
        assert sorted(collector.types()) == expected


async def test_sync_callbacks_run_in_threads_and_async_callbacks_on_the_loop(
    bus_settings: Settings, collector: Collector, collector2: Collector
) -> None:
    async with EventBus(settings=bus_settings) as bus:
        await bus.subscribe("a", "x.*", collector.sync_cb)
        await bus.subscribe("a", "x.*", collector2.async_cb)
        await bus.publish("x.y", "src", target_agent="a")
        await collector.wait(1)
        await collector2.wait(1)
    assert collector.threads[0].startswith("asyncsched-events")
    assert collector2.threads[0] == threading.current_thread().name


async def test_a_raising_callback_is_logged_with_the_event_id_and_stops_nothing(
    bus_settings: Settings, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_sync(event: Event) -> None:
        raise RuntimeError("sync boom")

    async def broken_async(event: Event) -> None:
        raise ValueError("async boom")

    async with EventBus(settings=bus_settings) as bus:
        await bus.subscribe("a", "*", broken_sync)
        await bus.subscribe("a", "*", broken_async)
        await bus.subscribe("a", "*", collector.async_cb)
        with caplog.at_level(logging.ERROR, logger="asyncsched.events"):
            first = await bus.publish("one", "src", target_agent="a")
            await bus.publish("two", "src", target_agent="a")
            await collector.wait(2)
            await bus.aclose()  # waits for the callbacks in flight
    assert collector.types() == ["one", "two"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(first.id in m and "sync boom" in m for m in messages)
    assert any(first.id in m and "async boom" in m for m in messages)


async def test_listen_timeouts(bus_settings: Settings) -> None:
    async with EventBus(settings=bus_settings, agent_name="a") as bus:
        assert await bus.listen(timeout=0) is None  # non-blocking
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await bus.listen(timeout=0.2) is None
        assert loop.time() - started >= 0.19

        waiting = asyncio.create_task(bus.listen(timeout=None))  # waits as long as it takes
        await bus.publish("late.event", "src", target_agent="a")
        got = await asyncio.wait_for(waiting, 10)
        assert got is not None
        assert got.event_type == "late.event"

        await bus.publish("buffered", "src")  # received while nobody listens: kept for the next listen()
        got = await bus.listen(timeout=10)
        assert got is not None
        assert got.event_type == "buffered"
        assert await bus.listen(timeout=0) is None


async def test_listen_returns_none_when_the_bus_closes(bus_settings: Settings) -> None:
    bus = EventBus(settings=bus_settings, agent_name="a")
    await bus.__aenter__()
    waiting = asyncio.create_task(bus.listen(timeout=None))
    await bus.publish("warmup", "src", target_agent="a")
    assert (await asyncio.wait_for(waiting, 10)) is not None
    waiting = asyncio.create_task(bus.listen(timeout=None))
    await bus.aclose()
    assert await asyncio.wait_for(waiting, 10) is None


async def test_events_iterators_each_see_every_matching_event(bus_settings: Settings) -> None:
    async with EventBus(settings=bus_settings, agent_name="a") as bus:
        seen_tasks: list[str] = []
        seen_all: list[str] = []

        async def consume(stream: EventStream, into: list[str], count: int) -> None:
            async for event in stream:
                into.append(event.event_type)
                if len(into) == count:
                    return

        # A stream buffers from the moment events() is called.
        t1 = asyncio.create_task(consume(bus.events("task.*", idle_timeout=15), seen_tasks, 2))
        t2 = asyncio.create_task(consume(bus.events(idle_timeout=15), seen_all, 3))
        for event_type in ("task.queued", "email.sent", "task.completed"):
            await bus.publish(event_type, "src")
        await asyncio.wait_for(asyncio.gather(t1, t2), 15)
        assert seen_tasks == ["task.queued", "task.completed"]
        assert seen_all == ["task.queued", "email.sent", "task.completed"]
        assert [e.event_type for e in [await bus.listen(10) for _ in range(3)] if e] == seen_all
        stream = bus.events(idle_timeout=0.1)
        assert [e async for e in stream] == []  # idle timeout ends the iteration
        assert len(bus._sinks) == 1  # ended streams stop buffering


async def test_unsubscribe_stops_delivery(bus_settings: Settings, collector: Collector) -> None:
    async with EventBus(settings=bus_settings, agent_name="a") as bus:
        sub = await bus.subscribe("a", "*", collector.async_cb)
        await bus.publish("first", "src", target_agent="a")
        await collector.wait(1)
        sub.unsubscribe()
        assert not sub.active
        await bus.publish("second", "src", target_agent="a")
        await bus.publish("third", "src", target_agent="a")
        assert [(await bus.listen(10)).event_type for _ in range(3)] == ["first", "second", "third"]  # type: ignore[union-attr]
    assert collector.types() == ["first"]


async def test_monitor_bus_sees_every_event(bus_settings: Settings) -> None:
    async with (
        EventBus(settings=bus_settings, agent_name="*") as monitor,
        EventBus(settings=bus_settings) as bus,
    ):
        await bus.publish("a.one", "src", target_agent="a")
        await bus.publish("b.two", "src", target_agent="b")
        await bus.publish("all.three", "src")
        got = [await monitor.listen(10) for _ in range(3)]
    assert [(e.event_type, e.target_agent) for e in got if e] == [
        ("a.one", "a"),
        ("b.two", "b"),
        ("all.three", None),
    ]


async def test_subscribing_before_entering_the_bus(bus_settings: Settings, collector: Collector) -> None:
    bus = EventBus(settings=bus_settings)
    sub = bus.subscribe("a", "*", collector.async_cb)
    async with bus:
        await sub
        await bus.publish("hello", "src", target_agent="a")
        await collector.wait(1)


async def test_callback_concurrency_is_bounded(bus_settings: Settings) -> None:
    running = 0
    peak = 0
    done = 0
    release = asyncio.Event()
    all_done = asyncio.Event()
    three_running = asyncio.Event()

    async def slow(event: Event) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        if running == 3:
            three_running.set()
        await release.wait()
        running -= 1
        done += 1
        if done == 10:
            all_done.set()

    async with EventBus(settings=bus_settings, max_concurrency=3) as bus:
        await bus.subscribe("a", "*", slow)
        for i in range(10):
            await bus.publish("e", "src", {"i": i}, target_agent="a")
        await asyncio.wait_for(three_running.wait(), 10)
        release.set()
        await asyncio.wait_for(all_done.wait(), 10)
    assert peak == 3


async def test_invalid_names_and_payloads_are_refused_before_sending(
    bus_settings: Settings, redis: aioredis.Redis
) -> None:
    async with EventBus(settings=bus_settings, agent_name="a", persist=True) as bus:
        await bus.subscribe("a", "*", lambda e: None, durable=True)  # the durable stream exists
        with pytest.raises(SerializationError, match=r"'x\.y'.*JSON"):
            await bus.publish("x.y", "src", {"when": datetime.now(UTC)}, target_agent="a")
        with pytest.raises(SerializationError, match="JSON"):
            await bus.publish("x.y", "src", {"nan": float("nan")}, target_agent="a")
        with pytest.raises(SerializationError, match="dict"):
            await bus.publish("x.y", "src", ["not", "a", "dict"])  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="event_type"):
            await bus.publish("has space", "src")
        with pytest.raises(ConfigurationError, match="event_type"):
            await bus.publish("", "src")
        with pytest.raises(ConfigurationError, match="event_type"):
            await bus.publish("task.*", "src")
        with pytest.raises(ConfigurationError, match="source_agent"):
            await bus.publish("x.y", "")
        with pytest.raises(ConfigurationError, match="target_agent"):
            await bus.publish("x.y", "src", target_agent="a b")
        with pytest.raises(ConfigurationError, match="pattern"):
            bus.subscribe("a", "task .*", lambda e: None)
        with pytest.raises(ConfigurationError, match="agent_name"):
            bus.subscribe("*", "x", lambda e: None)
        assert await bus.listen(timeout=0.1) is None
    prefix = bus_settings.key_prefix
    assert await redis.xlen(agent_event_stream(prefix, "a", cluster=is_cluster(redis))) == 0
    assert await redis.exists(event_log_stream(prefix, cluster=is_cluster(redis))) == 0


async def test_persist_appends_the_envelope_to_the_event_log(
    bus_settings: Settings, redis: aioredis.Redis
) -> None:
    async with EventBus(settings=bus_settings, persist=True) as bus:
        targeted = await bus.publish("email.sent", "email-agent", {"to": "x@y.z"}, target_agent="crm")
        broadcast = await bus.publish("system.startup", "asyncsched")
    entries = await redis.xrange(event_log_stream(bus_settings.key_prefix, cluster=is_cluster(redis)))
    fields = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
    assert fields == [
        {
            "id": targeted.id,
            "event_type": "email.sent",
            "source_agent": "email-agent",
            "target_agent": "crm",
            "payload": '{"to":"x@y.z"}',
            "created_at": targeted.created_at.isoformat(),
        },
        {
            "id": broadcast.id,
            "event_type": "system.startup",
            "source_agent": "asyncsched",
            "payload": "{}",
            "created_at": broadcast.created_at.isoformat(),
        },
    ]


async def test_without_durable_subscribers_nothing_is_kept(
    bus_settings: Settings, redis: aioredis.Redis
) -> None:
    async with EventBus(settings=bus_settings) as bus:
        await bus.publish("x.y", "src", target_agent="a")
        await bus.publish("x.y", "src")
    prefix = bus_settings.key_prefix
    assert (
        await redis.exists(
            agent_event_stream(prefix, "a", cluster=is_cluster(redis)),
            broadcast_event_stream(prefix, cluster=is_cluster(redis)),
        )
        == 0
    )
    assert await redis.exists(event_log_stream(prefix, cluster=is_cluster(redis))) == 0


async def test_publish_many_pipelines_prebuilt_events(bus_settings: Settings) -> None:
    events = [Event.create("batch.item", "src", {"i": i}, target_agent="a") for i in range(5)]
    async with EventBus(settings=bus_settings, agent_name="a") as bus:
        assert await bus.publish_many(events) == events
        assert await bus.publish_many([]) == []
        got = [await bus.listen(10) for _ in range(5)]
    assert got == events


async def test_a_client_passed_in_is_not_closed(bus_settings: Settings, redis: aioredis.Redis) -> None:
    async with EventBus(redis, settings=bus_settings) as bus:
        await bus.publish("x.y", "src")
    assert await redis.ping()


@pytest.mark.slow
async def test_live_and_durable_delivery_resume_after_a_redis_restart(
    real_redis_url: str, real_redis: RedisServer
) -> None:
    settings = Settings(redis_url=real_redis_url)
    durable: asyncio.Queue[Event] = asyncio.Queue()
    async with EventBus(settings=settings, agent_name="a") as bus:
        await bus.subscribe("d", "*", durable.put, durable=True)
        await bus.publish("before", "src", target_agent="a")
        assert (await bus.listen(timeout=10)) is not None
        real_redis.restart()  # data and connections gone

        async def publish_until(
            event_type: str, target: str, received: Callable[[], Awaitable[bool]]
        ) -> None:
            for _ in range(100):  # each round waits on the bus, not on a clock
                with contextlib.suppress(RedisConnectionError):
                    await bus.publish(event_type, "src", target_agent=target)
                if await received():
                    return
            raise AssertionError(f"{event_type} never arrived after the restart")

        async def live() -> bool:
            event = await bus.listen(timeout=0.2)
            return event is not None and event.event_type == "after"

        async def durable_got() -> bool:
            try:
                event = await asyncio.wait_for(durable.get(), 0.2)
            except TimeoutError:
                return False
            return event.event_type == "after.durable"

        await publish_until("after", "a", live)
        await publish_until("after.durable", "d", durable_got)


async def test_a_monitor_bus_runs_callbacks_of_any_agent(
    bus_settings: Settings, collector: Collector
) -> None:
    async with (
        EventBus(settings=bus_settings, agent_name="*") as monitor,
        EventBus(settings=bus_settings) as bus,
    ):
        await monitor.subscribe("crm", "lead.*", collector.async_cb)
        await bus.publish("lead.created", "web", target_agent="crm")
        await bus.publish("lead.created", "web", target_agent="billing")  # another agent: not crm's
        await bus.publish("lead.lost", "web")
        await collector.wait(2)
        assert len([await monitor.listen(10) for _ in range(3)]) == 3  # every event was received
    assert [(e.event_type, e.target_agent) for e in collector.events] == [
        ("lead.created", "crm"),
        ("lead.lost", None),
    ]


async def test_publishing_survives_a_script_flush(bus_settings: Settings, redis: aioredis.Redis) -> None:
    async with EventBus(settings=bus_settings, agent_name="a") as bus:
        await bus.publish("one", "src", target_agent="a")
        await redis.script_flush()
        await bus.publish("two", "src", target_agent="a")
        await redis.script_flush()
        batch = [Event.create("three", "src", {"i": i}, target_agent="a") for i in range(3)]
        await bus.publish_many(batch)
        got = [await bus.listen(timeout=10) for _ in range(5)]
        assert await bus.listen(timeout=0.1) is None  # nothing published twice
    assert [e.event_type for e in got if e] == ["one", "two", "three", "three", "three"]


async def test_a_burst_reaches_a_fast_async_callback_in_order(
    bus_settings: Settings, collector: Collector
) -> None:
    async with EventBus(settings=bus_settings) as bus:
        await bus.subscribe("a", "*", collector.async_cb)
        await bus.publish_many([Event.create("n", "src", {"i": i}, target_agent="a") for i in range(300)])
        await collector.wait(300)
    assert [e.payload["i"] for e in collector.events] == list(range(300))


async def test_concurrent_publishes_all_arrive_once(bus_settings: Settings, collector: Collector) -> None:
    # one publish at a time has the bus's own connection; the others meanwhile go through the pool
    async with EventBus(settings=bus_settings) as bus:
        await bus.subscribe("a", "*", collector.async_cb)
        sent = await asyncio.gather(
            *(bus.publish("n", "src", {"i": i}, target_agent="a") for i in range(200))
        )
        await collector.wait(200)
        assert await bus.listen(timeout=0.1) is not None  # listen() sees them too
    assert sorted(e.payload["i"] for e in collector.events) == list(range(200))
    assert {e.id for e in collector.events} == {e.id for e in sent}


async def test_closing_the_bus_delivers_queued_async_events_first(bus_settings: Settings) -> None:
    seen: list[int] = []
    gate = asyncio.Event()
    first_running = asyncio.Event()

    async def slow(event: Event) -> None:
        first_running.set()
        await gate.wait()
        seen.append(event.payload["i"])

    bus = EventBus(settings=bus_settings, max_concurrency=1)
    await bus.__aenter__()
    await bus.subscribe("a", "n", slow)
    await bus.publish_many([Event.create("n", "src", {"i": i}, target_agent="a") for i in range(3)])
    await bus.publish("marker", "src", target_agent="a")
    # listen() returns events in arrival order: after the marker, all three reached the subscription.
    received = [await bus.listen(timeout=10) for _ in range(4)]
    assert [e.event_type for e in received if e] == ["n", "n", "n", "marker"]
    await asyncio.wait_for(first_running.wait(), 10)
    closing = asyncio.create_task(bus.aclose())
    gate.set()
    await asyncio.wait_for(closing, 15)
    assert seen == [0, 1, 2]


async def test_a_sync_callback_returning_a_coroutine_is_reported(
    bus_settings: Settings, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    async with EventBus(settings=bus_settings) as bus:
        await bus.subscribe("a", "*", lambda event: collector.async_cb(event))
        with caplog.at_level(logging.ERROR, logger="asyncsched.events"):
            sent = await bus.publish("x.y", "src", target_agent="a")
            assert await bus.listen(timeout=10) == sent  # dispatched: the callback call was started
            await bus.aclose()  # waits for it
    assert collector.events == []
    assert any(sent.id in r.getMessage() and "async def" in r.getMessage() for r in caplog.records)


async def test_runs_on_the_chosen_event_loop(loop_kind: str) -> None:
    """``--loop=uvloop`` really puts the suite on uvloop (CI runs the worker and bus suites so)."""
    loop = asyncio.get_running_loop()
    assert (type(loop).__module__.split(".")[0] == "uvloop") == (loop_kind == "uvloop"), type(loop)
