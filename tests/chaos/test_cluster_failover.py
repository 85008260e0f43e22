"""Redis Cluster faults: durable events published while the master of the bus's slot hands over to its
replica (``CLUSTER FAILOVER``) all arrive, and publisher and subscriber carry on by themselves; a master that
restarts without its data is reported once, by name, and the history of its jobs reconciled."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import MovedError, RedisError

from asyncsched import _keys
from asyncsched.config import Settings
from asyncsched.events import Event, EventBus
from asyncsched.exceptions import BackendUnavailable
from asyncsched.queue import TaskQueue
from asyncsched.store import Database, ExecutionRepository, open_recorder
from asyncsched.store._redis_wipe import RedisWipes
from tests import jobs
from tests.servers import ClusterSetup
from tests.waiting import eventually

pytestmark = pytest.mark.cluster

QUEUES = ["alpha", "delta", "beta"]  # one per master (tests/worker/test_cluster.py)


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


@pytest.mark.timeout(90)
async def test_a_wiped_master_is_reported_once_naming_it_and_its_jobs_reconciled(
    real_cluster: ClusterSetup, cluster_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One master restarts without its data (not the one holding the single-node marker's slot): the
    Recorder says so once, naming the node and the open executions of the queues it held; their rows turn
    ``unknown``, those of the other masters' queues stay as they are."""
    settings = Settings(redis_url=cluster_url, queues=QUEUES)
    async with (
        Database(f"sqlite+aiosqlite:///{tmp_path}/h.db", auto_migrate=True) as db,
        TaskQueue(cluster_url, settings=settings) as queue,
    ):
        client: Any = queue.redis
        await client.initialize()
        owner = {q: client.get_node_from_key(queue.keys.queue(q)) for q in QUEUES}
        marker = client.get_node_from_key(_keys.redis_marker(settings.key_prefix))
        wiped_q = next(q for q in QUEUES if owner[q].name != marker.name)
        kept_q = next(q for q in QUEUES if owner[q].name == marker.name)
        victim = int(owner[wiped_q].port)
        recorder = open_recorder(
            queue.redis, db=db, settings=settings, flush_interval=0.05, reconcile_age=0.0,
            reconcile_interval=0.2, trim_interval=0.1,
        )  # fmt: skip
        repo = ExecutionRepository(db)
        with caplog.at_level(logging.WARNING, logger="asyncsched.store.recorder"):
            async with recorder:
                lost = [await queue.enqueue(jobs.add, args=(n, 1), queue=wiped_q) for n in range(3)]
                kept = await queue.enqueue(jobs.add, args=(9, 1), queue=kept_q)

                async def recorded() -> bool:
                    await recorder.flush()
                    return (await repo.counts()).get("queued") == 4

                await eventually(recorded, timeout=20, what="the queued executions to be recorded")
                await asyncio.to_thread(real_cluster.wipe, victim)

                async def reconciled() -> bool:
                    return [(await repo.get(i)).status for i in lost] == ["unknown"] * 3

                await eventually(reconciled, timeout=30, what="the wiped master's jobs to be marked unknown")
                await eventually(lambda: _wipes(caplog), timeout=10, what="the wipe to be reported")
                for _ in range(3):  # a few more checks of every master: still one line
                    await recorder.flush()
                    await asyncio.sleep(0.1)
        wipes = _wipes(caplog)
        assert len(wipes) == 1, wipes
        assert f":{victim}" in wipes[0]
        assert f"{wiped_q}: 3 queued" in wipes[0]
        assert kept_q not in wipes[0]
        # the other masters did not restart: nothing said of them (INFO of one node at random used to be
        # read as the cluster's, a "restart" at every check)
        assert not [r for r in caplog.records if "kept its data" in r.getMessage()]
        assert (await repo.get(kept)).status == "queued"  # its master kept its data
        assert "no longer exists in Redis" in ((await repo.get(lost[0])).error or "")  # the reason


@pytest.mark.timeout(60)
async def test_a_failover_is_not_taken_for_a_wipe(
    real_cluster: ClusterSetup, cluster_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica promoted in its master's place is a new master to the Recorder: it finds that master's
    marker there (same slots, same marker) and says the data is kept, no wipe."""
    settings = Settings(redis_url=cluster_url, queues=QUEUES)
    async with (
        Database(f"sqlite+aiosqlite:///{tmp_path}/h.db", auto_migrate=True) as db,
        TaskQueue(cluster_url, settings=settings) as queue,
    ):
        recorder = open_recorder(
            queue.redis, db=db, settings=settings, flush_interval=0.05, trim_interval=0.1
        )
        with caplog.at_level(logging.WARNING, logger="asyncsched.store.recorder"):
            async with recorder:
                job = await queue.enqueue(jobs.add, args=(1, 1), queue="delta")
                await recorder.flush()
                replica = real_cluster.replica_for(queue.keys.queue("delta"))
                await asyncio.to_thread(real_cluster.failover, replica)

                def promoted() -> bool:
                    return any("is a master now" in r.getMessage() for r in caplog.records)

                await eventually(promoted, timeout=20, what="the Recorder to check the promoted replica")
        assert f":{replica}" in next(r.getMessage() for r in caplog.records if "master now" in r.getMessage())
        assert _wipes(caplog) == []
        assert (await ExecutionRepository(db).get(job)).status == "queued"


@pytest.mark.timeout(60)
async def test_a_failover_seen_through_a_half_updated_slot_table_is_not_a_wipe(
    real_cluster: ClusterSetup, cluster_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The cause of the failover once taken for a wipe (1 run in 3 of the test above): after
    ``CLUSTER FAILOVER`` the client learns of the promoted replica from one ``MOVED``, and moves that one
    slot only in its table; a marker picked from that table (one of the promoted node's slots there: the
    moved one) is not the old master's, which the node holds."""
    settings = Settings(redis_url=cluster_url)
    async with TaskQueue(cluster_url, settings=settings) as queue:
        client: Any = queue.redis
        wipes = RedisWipes(client, settings.key_prefix)
        assert await wipes.check(first=True) == []
        key = queue.keys.queue("delta")
        replica = real_cluster.replica_for(key)
        await asyncio.to_thread(real_cluster.failover, replica)
        # the client's table in the failing runs: the promoted replica named for the one slot a MOVED was
        # answered for, its old master for the others; redis-py makes it on that MOVED when the slot's list
        # of nodes (from CLUSTER SLOTS, shared by the range) does not name the replica
        slot = client.keyslot(key)
        table = client.nodes_manager.slots_cache
        table[slot] = [table[slot][0]]
        await client.nodes_manager.move_slot(MovedError(f"{slot} 127.0.0.1:{replica}"))
        assert [s for s, nodes in table.items() if int(nodes[0].port) == replica] == [slot]
        with caplog.at_level(logging.WARNING, logger="asyncsched.store.recorder"):
            assert await wipes.check() == []
            assert await wipes.check() == []  # and the next pass says nothing more
        said = [r.getMessage() for r in caplog.records]
        assert said == [
            f"Redis Cluster: 127.0.0.1:{replica} is a master now (failover) and holds its slots' data"
        ]


def _wipes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "LOST ITS DATA" in r.getMessage()]
