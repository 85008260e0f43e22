"""Durable delivery on Redis Streams: missed events, acknowledgement, redelivery after a crash."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap

import pytest
import redis.asyncio as aioredis

from asyncsched._keys import agent_event_stream, broadcast_event_stream
from asyncsched._redis import is_cluster
from asyncsched.config import Settings
from asyncsched.events import Event, EventBus

from .conftest import Collector

pytestmark = pytest.mark.cluster  # the bus suite runs on a Redis Cluster too


async def _pending(redis: aioredis.Redis, settings: Settings, agent: str) -> int:
    total = 0
    for stream in (
        agent_event_stream(settings.key_prefix, agent, cluster=is_cluster(redis)),
        broadcast_event_stream(settings.key_prefix, cluster=is_cluster(redis)),
    ):
        info = await redis.xpending(stream, agent)
        total += int(info["pending"])
    return total


async def test_durable_subscription_receives_targeted_and_broadcast_and_acknowledges(
    bus_settings: Settings, redis: aioredis.Redis, collector: Collector
) -> None:
    async with EventBus(settings=bus_settings) as bus:
        await bus.subscribe("billing", "invoice.*", collector.async_cb, durable=True)
        sent = [
            await bus.publish("invoice.created", "crm", {"n": 1}, target_agent="billing"),
            await bus.publish("invoice.paid", "bank", {"n": 2}),
            await bus.publish("other.thing", "crm", target_agent="billing"),  # filtered, still acknowledged
            await bus.publish("invoice.created", "crm", target_agent="someone-else"),  # not for billing
        ]
        await collector.wait(2)
    assert [e.id for e in collector.events] == [sent[0].id, sent[1].id]
    assert collector.events[0] == sent[0]
    assert await _pending(redis, bus_settings, "billing") == 0


async def test_an_agent_that_was_down_gets_what_it_missed(
    bus_settings: Settings, redis: aioredis.Redis, collector: Collector
) -> None:
    async with EventBus(settings=bus_settings) as bus:
        await bus.subscribe("billing", "*", lambda e: None, durable=True)  # registers the agent's group
    async with EventBus(settings=bus_settings) as publisher:
        missed = [
            await publisher.publish("invoice.created", "crm", {"i": i}, target_agent="billing")
            for i in range(3)
        ]
        missed.append(await publisher.publish("system.notice", "ops"))
    async with EventBus(settings=bus_settings) as bus:  # the agent comes back
        await bus.subscribe("billing", "*", collector.async_cb, durable=True)
        await collector.wait(4)
    assert sorted(e.id for e in collector.events) == sorted(e.id for e in missed)
    targeted = [e for e in collector.events if e.target_agent == "billing"]
    assert [e.payload["i"] for e in targeted] == [0, 1, 2]  # in order
    assert await _pending(redis, bus_settings, "billing") == 0


async def test_each_durable_event_is_handled_once_per_agent(
    bus_settings: Settings, collector: Collector, collector2: Collector
) -> None:
    async with EventBus(settings=bus_settings) as one, EventBus(settings=bus_settings) as two:
        await one.subscribe("billing", "*", collector.async_cb, durable=True)
        await two.subscribe("billing", "*", collector.async_cb, durable=True)  # same agent: shares the work
        await two.subscribe("audit", "*", collector2.sync_cb, durable=True)  # another agent: its own copy
        sent = [await one.publish("x.y", "src", {"i": i}) for i in range(6)]
        await collector.wait(6)
        await collector2.wait(6)
    assert sorted(e.id for e in collector.events) == sorted(e.id for e in sent)
    assert sorted(e.id for e in collector2.events) == sorted(e.id for e in sent)


async def test_unacknowledged_event_of_a_dead_consumer_is_redelivered(
    bus_settings: Settings, redis: aioredis.Redis, collector: Collector
) -> None:
    stream = agent_event_stream(bus_settings.key_prefix, "billing", cluster=is_cluster(redis))
    async with EventBus(settings=bus_settings) as bus:
        await bus.subscribe("billing", "*", lambda e: None, durable=True)
    async with EventBus(settings=bus_settings) as publisher:
        sent = await publisher.publish("invoice.created", "crm", target_agent="billing")
    # A consumer takes the event and dies before acknowledging it.
    taken = await redis.xreadgroup("billing", "dead-consumer", {stream: ">"}, count=10)
    assert len(taken[0][1]) == 1
    async with EventBus(settings=bus_settings, claim_idle=0.3) as bus:
        await bus.subscribe("billing", "*", collector.async_cb, durable=True)
        await collector.wait(1)
    assert collector.events[0].id == sent.id
    assert await _pending(redis, bus_settings, "billing") == 0


async def test_a_stable_consumer_name_resumes_its_own_pending_events_at_once(
    bus_settings: Settings, redis: aioredis.Redis, collector: Collector
) -> None:
    stream = agent_event_stream(bus_settings.key_prefix, "billing", cluster=is_cluster(redis))
    async with EventBus(settings=bus_settings) as bus:
        await bus.subscribe("billing", "*", lambda e: None, durable=True)
    async with EventBus(settings=bus_settings) as bus:
        sent = await bus.publish("invoice.created", "crm", target_agent="billing")
    await redis.xreadgroup("billing", "billing-1", {stream: ">"}, count=10)  # "billing-1" crashed
    # claim_idle is long: only re-reading its own pending entries can deliver the event now.
    async with EventBus(settings=bus_settings, consumer="billing-1", claim_idle=600) as bus:
        await bus.subscribe("billing", "*", collector.async_cb, durable=True)
        await collector.wait(1)
    assert collector.events[0].id == sent.id


async def test_a_raising_durable_callback_is_logged_and_acknowledged(
    bus_settings: Settings, redis: aioredis.Redis, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("cannot bill")

    with caplog.at_level(logging.ERROR, logger="asyncsched.events"):
        async with EventBus(settings=bus_settings) as bus:
            await bus.subscribe("billing", "*", broken, durable=True)
            await bus.subscribe("billing", "*", collector.async_cb, durable=True)
            first = await bus.publish("one", "crm", target_agent="billing")
            await bus.publish("two", "crm", target_agent="billing")
            await collector.wait(2)
    assert collector.types() == ["one", "two"]
    assert any(first.id in r.getMessage() and "cannot bill" in r.getMessage() for r in caplog.records)
    assert await _pending(redis, bus_settings, "billing") == 0


async def test_unsubscribing_the_last_durable_subscription_stops_the_consumer(
    bus_settings: Settings, collector: Collector
) -> None:
    async with EventBus(settings=bus_settings) as bus:
        sub = await bus.subscribe("billing", "*", collector.async_cb, durable=True)
        await bus.publish("one", "crm", target_agent="billing")
        await collector.wait(1)
        sub.unsubscribe()
        assert bus.durable_subscriptions("billing") == []
        assert "billing" not in bus._durable
    async with EventBus(settings=bus_settings) as bus:  # the group kept what came meanwhile
        await bus.publish("two", "crm", target_agent="billing")
        await bus.subscribe("billing", "*", collector.async_cb, durable=True)
        await collector.wait(2)
    assert collector.types() == ["one", "two"]


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from asyncsched.config import Settings
    from asyncsched.events import EventBus

    async def main(url):
        async def handle(event):
            print("got", event.id, flush=True)
            await asyncio.Event().wait()  # stuck mid-callback until killed

        async with EventBus(settings=Settings(redis_url=url), claim_idle=1.0) as bus:
            await bus.subscribe("worker-b", "job.*", handle, durable=True)
            print("ready", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1]))
    """
)


async def _readline(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)
    assert line, f"child exited early with {proc.poll()}"
    return line.strip()


@pytest.mark.slow
async def test_durable_event_is_redelivered_after_the_subscriber_is_killed_mid_callback(
    real_redis_url: str, collector: Collector
) -> None:
    settings = Settings(redis_url=real_redis_url)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, real_redis_url], stdout=subprocess.PIPE, text=True)
    try:
        assert await _readline(proc) == "ready"
        async with EventBus(settings=settings) as publisher:
            sent = await publisher.publish("job.assigned", "dispatcher", {"job": 7}, target_agent="worker-b")
        assert await _readline(proc) == f"got {sent.id}"
        proc.kill()  # SIGKILL while the callback runs: the event was never acknowledged
        await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    async with EventBus(settings=settings, claim_idle=1.0) as bus:
        await bus.subscribe("worker-b", "job.*", collector.async_cb, durable=True)
        await collector.wait(1, timeout=30)
    assert collector.events[0] == sent
    redis = aioredis.Redis.from_url(real_redis_url)
    try:
        assert await _pending(redis, settings, "worker-b") == 0
    finally:
        await redis.aclose()


async def test_durable_streams_are_bounded(redis_url: str, redis: aioredis.Redis) -> None:
    settings = Settings(redis_url=redis_url, event_stream_maxlen=10)
    async with EventBus(settings=settings) as bus:
        await bus.subscribe("billing", "never.*", lambda e: None, durable=True)
        await bus.publish_many(
            [Event.create("x.y", "src", {"i": i}, target_agent="billing") for i in range(500)]
        )
    # MAXLEN ~ trims whole radix-tree nodes (100 entries by default): bounded, not exact.
    assert (
        await redis.xlen(agent_event_stream(settings.key_prefix, "billing", cluster=is_cluster(redis))) <= 200
    )
