"""Claims and leases under the races they exist for, on every backend (the real Redis runs the real Lua).

Each replica's reads are pinned to what it saw *before* the other replica acted, so the interleaving the
compare-and-set scripts guard against happens every time, not by luck of timing. The recording queue
counts a repeated job id (see ``RecordingQueue``): a tick enqueued twice fails these tests.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from asyncsched.config import Settings
from asyncsched.scheduler import TaskScheduler, build_task, job_id_for
from asyncsched.scheduler._index import to_ms

from .conftest import FUNCTION, Clock, RecordingQueue, plain, wait_for


def at(h: int, m: int = 0, s: int = 0) -> datetime:
    return datetime(2026, 6, 1, h, m, s, tzinfo=UTC)


@pytest.mark.cluster
async def test_a_claim_holds_only_while_the_index_still_has_the_tick_it_saw(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    task = await scheduler.register_task(name="t", type="interval", schedule="1 minute", function=FUNCTION)
    index = scheduler.index
    seen, nxt = to_ms(at(12, 1)), to_ms(at(12, 2))
    assert await index.score(task.id) == seen
    lease = to_ms(at(12, 2))
    assert (await index.claim(task.id, seen, nxt, [seen], lease)).code == 1
    assert await index.score(task.id) == nxt
    # a second claimer that saw the same tick loses: the entry moved on
    assert (await index.claim(task.id, seen, to_ms(at(12, 3)), [seen], lease)).code == 0
    assert await index.score(task.id) == nxt
    assert await index.expired_leases(lease) == [(task.id, seen)]  # one lease, not two
    # a tick the index never held is not claimable either
    assert (await index.claim(task.id, to_ms(at(12, 1, 30)), nxt, [seen], lease)).code == 0


@pytest.mark.cluster
async def test_replicas_that_both_saw_a_tick_due_enqueue_it_once(
    sched_settings: Settings, queue: RecordingQueue, clock: Clock
) -> None:
    a = TaskScheduler(settings=sched_settings, queue=queue, clock=clock)
    b = TaskScheduler(settings=sched_settings, queue=queue, clock=clock)
    try:
        task = await a.register_task(name="t", type="interval", schedule="1 minute", function=FUNCTION)
        for minute in (1, 2, 3):
            clock.now = at(12, minute)
            await b.run_pending(at(11))  # open b (nothing due at 11:00)
            seen = await b.index.due(to_ms(clock.now))
            assert seen == [(task.id, to_ms(clock.now))]
            assert [plain(f.job_id) for f in await a.run_pending()] == [job_id_for(task.id, clock.now)]
            stale = pytest.MonkeyPatch()
            with stale.context() as m:
                m.setattr(b.index, "due", lambda now_ms, limit=500, _s=seen: _async(_s))
                assert await b.run_pending() == []  # b's claim finds the entry moved: it lost
        assert queue.job_ids == [job_id_for(task.id, at(12, m)) for m in (1, 2, 3)]
    finally:
        await a.aclose()
        await b.aclose()


async def _async(value: object) -> object:
    return value


@pytest.mark.cluster
async def test_an_expired_lease_is_taken_over_by_one_replica_only(
    sched_settings: Settings, queue: RecordingQueue, clock: Clock
) -> None:
    other = RecordingQueue()  # b's own, so that a wrong takeover by b shows at once (a's blocks)
    a = TaskScheduler(settings=sched_settings, queue=queue, clock=clock)
    b = TaskScheduler(settings=sched_settings, queue=other, clock=clock)
    try:
        task = await a.register_task(name="t", type="interval", schedule="1 hour", function=FUNCTION)
        await b.run_pending(at(11))
        clock.now = at(13)
        queue.fail = 1  # the claimer "dies" between its claim and its enqueue: the tick stays leased
        assert await a.run_pending() == []
        clock.now = at(13, 1, 1)  # the lease (60 s) expired
        # both replicas see the expired lease; a takes it over and is slow to enqueue
        seen = await b.index.expired_leases(to_ms(clock.now))
        assert seen == [(task.id, to_ms(at(13)))]
        queue.hold = asyncio.Event()
        queue.entered.clear()
        taking = asyncio.create_task(a.run_pending())
        await asyncio.wait_for(queue.entered.wait(), 30)  # a holds the lease now, mid-enqueue
        with pytest.MonkeyPatch().context() as m:
            m.setattr(b.index, "expired_leases", lambda now_ms, limit=100: _async(seen))
            assert await b.run_pending() == []  # the lease is a's again (renewed): b must not take it
        assert other.calls == []
        queue.hold.set()
        assert [plain(f.job_id) for f in await taking] == [job_id_for(task.id, at(13))]
        assert queue.job_ids == [job_id_for(task.id, at(13))]
        assert await a.index.expired_leases(to_ms(at(14))) == []  # done: the lease is gone
    finally:
        if queue.hold is not None:
            queue.hold.set()
        await a.aclose()
        await b.aclose()


@pytest.mark.cluster
async def test_relet_takes_only_an_expired_lease(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    task = await scheduler.register_task(name="t", type="interval", schedule="1 hour", function=FUNCTION)
    index = scheduler.index
    tick = to_ms(at(13))
    assert (await index.claim(task.id, tick, to_ms(at(14)), [tick], to_ms(at(13, 1)))).code == 1
    assert not await index.relet(task.id, tick, to_ms(at(13, 0, 30)), to_ms(at(13, 2)))  # still held
    assert await index.expired_leases(to_ms(at(13, 1))) == [(task.id, tick)]  # deadline unchanged
    assert await index.relet(task.id, tick, to_ms(at(13, 1, 1)), to_ms(at(13, 2, 1)))  # expired: taken
    assert not await index.relet(task.id, tick, to_ms(at(13, 1, 1)), to_ms(at(13, 2, 1)))  # now held again
    assert not await index.relet(task.id, to_ms(at(12)), to_ms(at(15)), to_ms(at(16)))  # no such lease


@pytest.mark.cluster
async def test_a_leased_tick_of_a_deleted_task_is_dropped_not_fired(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    task = await scheduler.register_task(name="t", type="interval", schedule="1 hour", function=FUNCTION)
    clock.now = at(13)
    queue.fail = 1  # the claimer dies before enqueueing: the tick stays leased
    assert await scheduler.run_pending() == []
    assert await scheduler.index.expired_leases(to_ms(at(15))) == [(task.id, to_ms(at(13)))]
    await scheduler.unregister_task(task.id)
    clock.now = at(13, 1, 1)  # the lease expired; the task is gone from SQL
    assert await scheduler.run_pending() == []
    assert queue.calls == []
    assert await scheduler.index.expired_leases(to_ms(at(15))) == []  # the lease was released, not leaked
    clock.now = at(14, 0, 1)
    assert await scheduler.run_pending() == []
    assert queue.calls == []


@pytest.mark.cluster
async def test_a_large_batch_of_ticks_due_together_is_enqueued_once_across_three_replicas(
    sched_settings: Settings, queue: RecordingQueue, clock: Clock
) -> None:
    """1,200 tasks due at the same instant (more than one pass's batch), three replicas firing at once on
    one queue: every tick is claimed by one replica and enqueued once, none is left unclaimed or leased."""
    replicas = [TaskScheduler(settings=sched_settings, queue=queue, clock=clock) for _ in range(3)]
    try:
        tasks = [
            build_task(
                agent_name="batch",
                name=f"t{k}",
                type="interval",
                schedule="1 hour",
                function=FUNCTION,
                start="2026-06-01T00:00:00+00:00",
            )
            for k in range(1200)
        ]
        ids = await replicas[0].add_tasks(tasks)
        for replica in replicas:
            await replica.run_pending(at(11, 59))  # open each (nothing due yet)
        clock.now = at(13)
        fired: list[str] = []
        for _ in range(4):  # each pass claims at most DUE_BATCH entries; the loop runs passes until none
            passes = await asyncio.gather(*(r.run_pending() for r in replicas))
            fired += [plain(f.job_id) for batch in passes for f in batch]
        expected = sorted(job_id_for(task_id, at(13)) for task_id in ids)
        assert sorted(fired) == expected
        assert sorted(queue.job_ids) == expected  # the recording queue keeps a repeated id: none
        claimed = await replicas[0].index.fired()
        assert len(claimed) == len(set(claimed)) == 1200
        assert await replicas[0].index.expired_leases(to_ms(at(23))) == []  # every lease released
        assert await replicas[0].index.due(to_ms(at(13, 59))) == []  # each entry moved to 14:00
    finally:
        for replica in replicas:
            await replica.aclose()


async def test_the_read_between_passes_releases_leases_and_returns_what_is_due(
    scheduler: TaskScheduler, clock: Clock
) -> None:
    task = await scheduler.register_task(name="t", type="interval", schedule="1 minute", function=FUNCTION)
    index = scheduler.index
    tick = to_ms(at(12, 1))
    before = await index.wake_state(tick, 500)
    assert (before.next_ms, before.lease_ms, before.indexed) == (tick, None, True)
    assert before.due == [(task.id, tick)]
    assert before.earliest == tick
    assert (await index.wake_state(tick - 1, 500)).due == []  # not due a millisecond earlier
    assert (await index.claim(task.id, tick, to_ms(at(12, 2)), [tick], to_ms(at(12, 3)))).code == 1
    leased = await index.wake_state(tick, 500)
    assert (leased.lease_ms, leased.due, leased.earliest) == (to_ms(at(12, 3)), [], to_ms(at(12, 2)))
    released = await index.wake_state(tick, 500, release=[(task.id, tick)])
    assert released.lease_ms is None  # released before it was read
    assert await index.expired_leases(to_ms(at(13))) == []


async def test_a_running_scheduler_releases_the_lease_of_every_tick_it_fired(
    sched_settings: Settings, queue: RecordingQueue
) -> None:
    """The loop releases a pass's leases with the read that follows it: none is left to expire."""
    async with TaskScheduler(settings=sched_settings, queue=queue, fire=True) as firer:
        await firer.register_task(name="t", type="cron", schedule="* * * * * *", function=FUNCTION)
        await wait_for(lambda: _at_least(queue, 3))
        # a leaked lease stays until it expires (60 s): with one per tick they would pile up
        await wait_for(lambda: _leases_at_most(firer, 1))  # (the newest tick's, for a moment)


async def _at_least(queue: RecordingQueue, n: int) -> bool:
    return len(queue.calls) >= n


async def _leases_at_most(scheduler: TaskScheduler, n: int) -> bool:
    return int(await scheduler.index.redis.zcard(scheduler.index.pending_key)) <= n
