"""Redis Sentinel: queue, worker and event bus through a real Sentinel, and through its failover.

Run on the lowest and the newest redis-py the package allows by ``nox -s sentinel_compat``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as syncredis
from redis.exceptions import RedisError

from asyncsched.config import Settings
from asyncsched.events import Event, EventBus
from asyncsched.exceptions import BackendUnavailable, JobNotFound
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.worker import Worker
from tests import jobs
from tests.conftest import _started
from tests.servers import SentinelSetup, sentinel_setup
from tests.waiting import eventually

pytestmark = pytest.mark.sentinel


@pytest.fixture
def sentinel() -> Iterator[SentinelSetup]:
    with _started(sentinel_setup) as setup:
        yield setup


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    async with worker:
        task = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            worker.request_stop()
            await asyncio.wait_for(task, 30)


def on_port(port: int, key: str) -> bool:
    with syncredis.Redis(port=port) as client:
        return bool(client.exists(key))


async def test_queue_worker_and_bus_go_to_the_master(sentinel: SentinelSetup) -> None:
    """Every path (the pool, each ``Line``, pub/sub) reaches the master the Sentinel names (nothing listens
    on localhost:6379, where redis-py >= 6 used to send the Line connections)."""
    settings = Settings(redis_url=sentinel.url)
    received: list[Event] = []
    async with (
        TaskQueue(sentinel.url, settings=settings) as queue,
        EventBus(sentinel.url, settings=settings) as bus,
        running(Worker(redis=sentinel.url, settings=settings, poll_timeout=0.2)),
    ):
        await bus.subscribe("watcher", "ping.*", received.append)
        job_id = await queue.enqueue(jobs.add, args=(2, 3))
        assert await queue.result(job_id, wait=15) == 5
        await bus.publish("ping.one", "tester", {"n": 1}, target_agent="watcher")
        await eventually(lambda: received, what="the event through the Sentinel's master")
        assert received[0].payload == {"n": 1}
    assert on_port(sentinel.master.port, f"rq:job:{job_id}")


async def test_failover_loses_nothing_acknowledged(sentinel: SentinelSetup) -> None:
    """Producers, a worker and a subscriber keep going through ``SENTINEL FAILOVER``: within a few seconds
    of the promotion new jobs run and new events arrive, and every enqueue that returned an id ran.

    Except, as docs/fault-tolerance.md states, a write the old master acknowledged in the instant between
    the replica's promotion and the master noticing it (an enqueue, or a run's finish): only a job
    acknowledged while the failover was under way may be missing or left started, and at most two."""
    settings = Settings(redis_url=sentinel.url)
    acked: list[str] = []
    acked_at: dict[str, float] = {}
    refused = 0
    received: set[int] = set()
    stop = asyncio.Event()

    async def produce(queue: TaskQueue) -> None:
        nonlocal refused
        n = 0
        while not stop.is_set():
            try:
                job_id = await queue.enqueue(jobs.add, args=(n, 0))
                acked.append(job_id)
                acked_at[job_id] = time.monotonic()
            except (RedisError, BackendUnavailable):
                refused += 1  # not acknowledged: the caller knows it failed
            n += 1
            await asyncio.sleep(0.01)

    async def publish(bus: EventBus) -> None:
        n = 0
        while not stop.is_set():
            with contextlib.suppress(RedisError, BackendUnavailable):
                await bus.publish("tick.n", "producer", {"n": n}, target_agent="watcher")
            n += 1
            await asyncio.sleep(0.02)

    async with (
        TaskQueue(sentinel.url, settings=settings) as queue,
        EventBus(sentinel.url, settings=settings) as publisher,
        EventBus(sentinel.url, settings=settings) as subscriber,
        running(Worker(redis=sentinel.url, settings=settings, poll_timeout=0.2)),
    ):
        await subscriber.subscribe("watcher", "tick.*", lambda e: received.add(e.payload["n"]))
        tasks = [asyncio.create_task(produce(queue)), asyncio.create_task(publish(publisher))]
        await eventually(lambda: len(acked) > 20 and received, what="traffic before the failover")
        old = sentinel.master.port
        switching = time.monotonic()
        new = await asyncio.to_thread(sentinel.failover)
        promoted = time.monotonic()
        assert new == sentinel.replica.port != old
        mark = len(acked)
        await eventually(lambda: len(acked) > mark + 10, timeout=10, what="enqueues on the new master")
        first_new = acked[mark + 1]
        assert await queue.result(first_new, wait=10) is not None
        seen = len(received)
        await eventually(lambda: len(received) > seen + 10, timeout=10, what="events after the failover")
        recovered = time.monotonic() - promoted
        stop.set()
        await asyncio.gather(*tasks)

        in_switch = {j for j in acked if switching - 0.1 <= acked_at[j] <= promoted}

        async def all_done() -> dict[str, object]:
            statuses = await asyncio.gather(*(queue.status(j) for j in acked), return_exceptions=True)
            others = {j: s for j, s in zip(acked, statuses, strict=True) if s != JobStatus.SUCCESS}
            settled = all(
                j in in_switch and (isinstance(s, JobNotFound) or s == JobStatus.RUNNING)
                for j, s in others.items()
            )
            return {"others": others} if settled else {}

        others = (await eventually(all_done, timeout=30, what="every acknowledged job to succeed"))["others"]
    assert len(others) <= 2, others
    assert recovered < 10, f"recovery took {recovered:.1f}s"
    assert all(on_port(new, f"rq:job:{j}") for j in acked if j not in others)


async def test_wait_replicas_acknowledges_only_replicated_enqueues(
    sentinel: SentinelSetup, real_redis_url: str
) -> None:
    settings = Settings(redis_url=sentinel.url)
    async with TaskQueue(sentinel.url, settings=settings, wait_replicas=1) as queue:
        job_id = await queue.enqueue(jobs.add, args=(1, 2))
    assert on_port(sentinel.replica.port, f"rq:job:{job_id}")  # on the replica when acknowledged
    # a server without replicas cannot acknowledge it: the caller is told
    async with TaskQueue(
        real_redis_url, settings=Settings(redis_url=real_redis_url), wait_replicas=1
    ) as alone:
        with pytest.raises(BackendUnavailable, match="0 of 1 replicas"):
            await alone.enqueue(jobs.add, args=(1, 2))
