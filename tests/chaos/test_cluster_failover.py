"""Redis Cluster failover under load: durable events published while the master of the bus's slot hands
over to its replica (``CLUSTER FAILOVER``) all arrive, and publisher and subscriber carry on by themselves."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import RedisError

from asyncsched import _keys
from asyncsched.config import Settings
from asyncsched.events import Event, EventBus
from asyncsched.exceptions import BackendUnavailable
from tests.servers import ClusterSetup
from tests.waiting import eventually

pytestmark = pytest.mark.cluster


@pytest.mark.timeout(60)
async def test_bus_failover_loses_no_acknowledged_durable_event(
    real_cluster: ClusterSetup, cluster_url: str
) -> None:
    settings = Settings(redis_url=cluster_url)
    acked: list[int] = []
    refused = 0
    received: set[int] = set()
    stop = asyncio.Event()

    async def publish(bus: EventBus) -> None:
        nonlocal refused
        n = 0
        while not stop.is_set():
            try:
                await bus.publish("tick.n", "producer", {"n": n}, target_agent="billing")
                acked.append(n)
            except (RedisError, BackendUnavailable):
                refused += 1  # not acknowledged: the caller knows it failed
            n += 1
            await asyncio.sleep(0.005)

    def got(event: Event) -> None:
        received.add(event.payload["n"])

    async with EventBus(settings=settings) as publisher, EventBus(settings=settings) as subscriber:
        await subscriber.subscribe("billing", "tick.*", got, durable=True)
        task = asyncio.create_task(publish(publisher))
        await eventually(lambda: len(acked) > 50 and received, what="traffic before the failover")
        stream = _keys.agent_event_stream(settings.key_prefix, "billing", cluster=True)
        old_masters = set(real_cluster.masters())
        replica = real_cluster.replica_for(stream)
        promoted = await asyncio.to_thread(real_cluster.failover, replica)
        switched = time.monotonic()
        assert promoted not in old_masters
        mark = len(acked)
        await eventually(lambda: len(acked) > mark + 50, timeout=15, what="publishes after the failover")
        seen = max(received)
        await eventually(lambda: max(received) > seen + 20, timeout=15, what="deliveries after the failover")
        recovered = time.monotonic() - switched
        stop.set()
        await task
        await eventually(lambda: received >= set(acked), timeout=20, what="every acknowledged event")
    assert recovered < 15, f"recovery took {recovered:.1f}s"
    assert set(acked) <= received
