"""``EventBus()`` without ``async with`` starts itself on first use, like ``TaskQueue`` (issue 16.5).

It used to return a "live" subscription that never delivered, and ``publish`` raised. Now ``subscribe``,
``publish``, ``listen`` and ``events`` start it; ``aclose()`` releases it; a closed bus refuses every
operation instead of silently doing nothing.
"""

from __future__ import annotations

import asyncio

import pytest

from asyncsched.config import Settings
from asyncsched.events import EventBus

from ..servers import free_port
from .conftest import Collector


async def test_subscribe_without_async_with_delivers(bus_settings: Settings, collector: Collector) -> None:
    bus = EventBus(settings=bus_settings)
    try:
        await bus.subscribe("a", "x.*", collector.async_cb)
        await bus.subscribe("a", "x.*", collector.sync_cb, durable=True)
        async with EventBus(settings=bus_settings) as publisher:
            sent = await publisher.publish("x.y", "src", target_agent="a")
        await collector.wait(2)
        assert [e.id for e in collector.events] == [sent.id, sent.id]
    finally:
        await bus.aclose()


async def test_publish_listen_and_events_without_async_with(bus_settings: Settings) -> None:
    bus = EventBus(settings=bus_settings, agent_name="a")
    try:
        stream = bus.events("x.*")
        assert await bus.listen(timeout=0) is None  # starts the bus and its reader
        sent = await bus.publish("x.y", "src", {"n": 1}, target_agent="a")
        assert await bus.listen(10) == sent
        assert await asyncio.wait_for(anext(stream), 10) == sent
        assert bus.started
    finally:
        await bus.aclose()
    assert not bus.started


async def test_a_closed_bus_refuses_every_operation(bus_settings: Settings) -> None:
    bus = EventBus(settings=bus_settings)
    await bus.publish("x.y", "src")  # started on first use
    await bus.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await bus.publish("x.y", "src")
    with pytest.raises(RuntimeError, match="closed"):
        bus.subscribe("a", "*", lambda e: None)
    with pytest.raises(RuntimeError, match="closed"):
        bus.events()
    with pytest.raises(RuntimeError, match="closed"):
        await bus.start()
    with pytest.raises(RuntimeError, match="closed"):
        async with bus:
            pass


async def test_concurrent_first_uses_start_the_bus_once(bus_settings: Settings, collector: Collector) -> None:
    bus = EventBus(settings=bus_settings, agent_name="a")
    try:
        subs = [bus.subscribe("a", "*", collector.async_cb) for _ in range(3)]
        sent = await asyncio.gather(*(bus.publish("x.y", "src", target_agent="a") for _ in range(3)))
        await asyncio.gather(*(s.wait_ready() for s in subs))
        assert bus._redis is not None
        more = await bus.publish("x.z", "src", target_agent="a")
        try:
            await collector.wait(12)  # 4 events x 3 subscriptions
        except TimeoutError:
            raise AssertionError([e.event_type for e in collector.events]) from None
        assert sorted(e.id for e in collector.events) == sorted([e.id for e in [*sent, more]] * 3)
    finally:
        await bus.aclose()


async def test_a_bus_that_cannot_start_says_so() -> None:
    port = free_port()  # nothing listens there
    bus = EventBus(settings=Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
    sub = bus.subscribe("a", "*", lambda e: None)
    with pytest.raises(Exception, match=str(port)):
        await sub.wait_ready(timeout=20)
    with pytest.raises(RuntimeError, match="closed"):
        await bus.publish("x.y", "src")
