"""Firing: each tick once (across replicas and crashes), misfire policies, live changes, SQL as the truth."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from asyncsched.config import Settings
from asyncsched.scheduler import TaskScheduler, job_id_for

from .conftest import FUNCTION, Clock, RecordingQueue, plain, wait_for

pytestmark = pytest.mark.cluster  # the scheduler's firing runs on a Redis Cluster too


def at(h: int, m: int = 0, s: int = 0) -> datetime:
    return datetime(2026, 6, 1, h, m, s, tzinfo=UTC)


async def test_fires_each_tick_once_with_a_derived_job_id(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    task = await scheduler.register_task(name="t", type="interval", schedule="1 minute", function=FUNCTION)
    assert await scheduler.run_pending() == []  # 12:00:00 is not after registration at 12:00:00
    clock.now = at(12, 1)
    fired = await scheduler.run_pending()
    assert [plain(f.job_id) for f in fired] == [job_id_for(task.id, at(12, 1))]
    assert plain(fired[0].job_id) == f"sched-{task.id}-{int(at(12, 1).timestamp())}"
    # the id the queue stores it under: on a cluster after its queue's tag (every key of the job in its slot)
    assert fired[0].job_id == ("{default}" if scheduler.index.cluster else "") + plain(fired[0].job_id)
    assert await scheduler.run_pending() == []  # the same tick never again
    clock.now = at(12, 2, 30)
    await scheduler.run_pending()
    assert queue.job_ids == [job_id_for(task.id, at(12, 1)), job_id_for(task.id, at(12, 2))]
    call = queue.calls[0]
    assert (call["agent_name"], call["task_name"], call["scheduled_task_id"]) == ("test-agent", "t", task.id)
    assert call["unique"] is True
    assert call["queue"] == "default"
    assert [t for _, t in await scheduler.index.fired()] == [
        int(at(12, 1).timestamp() * 1000),
        int(at(12, 2).timestamp() * 1000),
    ]


async def test_replicas_on_one_redis_fire_each_tick_once(
    sched_settings: Settings, queue: RecordingQueue, clock: Clock
) -> None:
    replicas = [TaskScheduler(settings=sched_settings, queue=queue, clock=clock) for _ in range(3)]
    try:
        await replicas[0].register_task(name="t", type="cron", schedule="* * * * * *", function=FUNCTION)
        for _ in range(20):
            clock.advance(seconds=1)
            await asyncio.gather(*(r.run_pending() for r in replicas))
        assert len(queue.calls) == 20
        assert len(set(queue.job_ids)) == 20
    finally:
        for r in replicas:
            await r.aclose()


async def test_lost_claim_is_recovered_after_its_lease(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    task = await scheduler.register_task(name="t", type="interval", schedule="1 hour", function=FUNCTION)
    clock.now = at(13)
    queue.fail = 1  # the claimer "dies" between claim and enqueue
    assert await scheduler.run_pending() == []
    assert queue.calls == []
    clock.now = at(13, 0, 30)
    assert await scheduler.run_pending() == []  # lease still held
    clock.now = at(13, 1, 1)
    recovered = await scheduler.run_pending()
    assert [plain(f.job_id) for f in recovered] == [job_id_for(task.id, at(13))]
    clock.now = at(13, 5)
    assert await scheduler.run_pending() == []
    assert queue.job_ids == [job_id_for(task.id, at(13))]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("coalesce", [at(12, 10)]),  # one run for all missed ticks: the latest
        ("skip", []),  # none: resume at the next tick
        ("all", [at(12, m) for m in range(1, 11)]),
    ],
)
async def test_misfire_policies(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock, policy: str, expected: list[datetime]
) -> None:
    task = await scheduler.register_task(
        name="t", type="interval", schedule="1 minute", function=FUNCTION, misfire=policy, misfire_grace=30
    )
    clock.now = at(12, 10, 45)  # every scheduler was down from 12:00 to 12:10:45
    await scheduler.run_pending()
    assert queue.job_ids == [job_id_for(task.id, t) for t in expected]
    assert await scheduler.index.score(task.id) == int(at(12, 11).timestamp() * 1000)
    clock.now = at(12, 11)
    await scheduler.run_pending()
    assert queue.job_ids[-1] == job_id_for(task.id, at(12, 11))


async def test_skip_runs_a_late_tick_within_grace(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    task = await scheduler.register_task(
        name="t",
        type="interval",
        schedule="1 hour",
        function=FUNCTION,
        misfire="skip",
        misfire_grace="5 minutes",
    )
    clock.now = at(13, 3)
    await scheduler.run_pending()
    assert queue.job_ids == [job_id_for(task.id, at(13))]


async def test_coalesce_after_a_long_outage_of_a_dense_cron(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    task = await scheduler.register_task(name="t", type="cron", schedule="* * * * * *", function=FUNCTION)
    clock.now = at(12) + timedelta(days=3, seconds=0.5)
    await scheduler.run_pending()
    assert queue.job_ids == [job_id_for(task.id, at(12) + timedelta(days=3))]


async def test_disabled_and_deleted_tasks_do_not_fire(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    a = await scheduler.register_task(name="a", type="interval", schedule="1 minute", function=FUNCTION)
    b = await scheduler.register_task(name="b", type="interval", schedule="1 minute", function=FUNCTION)
    await scheduler.disable(a.id)
    await scheduler.unregister_task(b.id)
    clock.now = at(12, 5)
    assert await scheduler.run_pending() == []
    await scheduler.enable(a.id)  # fires from its next tick after now
    clock.now = at(12, 6)
    assert [f.task_name for f in await scheduler.run_pending()] == ["a"]


async def test_edit_on_one_replica_is_used_by_another(
    sched_settings: Settings, queue: RecordingQueue, clock: Clock
) -> None:
    async with (
        TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as api,
        TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as firer,
    ):
        task = await api.register_task(name="t", type="interval", schedule="1 minute", function=FUNCTION)
        clock.now = at(12, 1)
        assert len(await firer.run_pending()) == 1  # firer caches the task
        await api.update_task(task.id, schedule="1 hour", kwargs={"v": 2})
        clock.now = at(12, 2)
        assert await firer.run_pending() == []  # the 12:02 tick is gone with the old schedule
        clock.now = at(13)
        assert await firer.run_pending() == []  # the new schedule counts from its edit at 12:01
        clock.now = at(13, 1)
        (firing,) = await firer.run_pending()
        assert firing.tick == at(13, 1)
        assert queue.calls[-1]["kwargs"] == {"v": 2}


async def test_date_task_fires_once(scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock) -> None:
    task = await scheduler.register_task(
        name="once", type="date", schedule="2026-06-01T12:30:00Z", function=FUNCTION
    )
    clock.now = at(12, 31)
    await scheduler.run_pending()
    clock.now = at(14)
    await scheduler.run_pending()
    assert queue.job_ids == [job_id_for(task.id, at(12, 30))]
    await scheduler.rebuild_index()  # a restart does not fire it again
    await scheduler.run_pending()
    assert len(queue.calls) == 1


async def test_sql_is_the_source_of_truth_after_redis_loss(
    sched_settings: Settings, queue: RecordingQueue, clock: Clock, redis_url: str
) -> None:
    from asyncsched._redis import create_redis

    async with TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as first:
        task = await first.register_task(name="t", type="interval", schedule="1 minute", function=FUNCTION)
        clock.now = at(12, 1)
        await first.run_pending()
    # closing flushed last_run_at / next_run_at to SQL
    async with TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as probe:
        stored = await probe.get_task(task.id)
    assert stored.last_run_at == at(12, 1)
    assert stored.next_run_at == at(12, 2)
    redis = create_redis(redis_url)
    await redis.flushall()  # Redis restarted empty
    await redis.aclose()
    clock.now = at(12, 2)
    async with TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as second:
        await second.rebuild_index()
        await second.run_pending()
    assert queue.job_ids == [job_id_for(task.id, at(12, 1)), job_id_for(task.id, at(12, 2))]


async def test_running_scheduler_picks_up_changes_and_sleeps_between_ticks(
    sched_settings: Settings, queue: RecordingQueue
) -> None:
    """Real clock: an idle replica wakes on a change notice (not a poll) and fires the new task."""
    async with (
        TaskScheduler(settings=sched_settings, queue=queue, fire=True) as firer,
        TaskScheduler(settings=sched_settings, queue=queue) as api,
    ):
        await wait_for(lambda: _true(firer._listener_ready.is_set()))
        passes = 0
        original = firer.run_pending

        async def counting(now: datetime | None = None) -> list[object]:
            nonlocal passes
            passes += 1
            return await original(now)  # type: ignore[return-value]

        firer.run_pending = counting  # type: ignore[method-assign]
        task = await api.register_task(name="t", type="cron", schedule="* * * * * *", function=FUNCTION)
        await wait_for(lambda: _true(len(queue.calls) >= 2))
        await api.disable(task.id)
        count = len(queue.calls)
        await wait_for(lambda: _true((view := firer._cache.get(task.id)) is not None and not view.enabled))
        assert len(queue.calls) <= count + 1
        assert passes < 50  # woke per tick and per change, not in a busy loop


async def _true(value: bool) -> bool:
    return value


async def test_a_slow_pass_runs_every_due_tick_within_grace(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    task = await scheduler.register_task(name="t", type="cron", schedule="* * * * * *", function=FUNCTION)
    clock.now = at(
        12,
        0,
        3,
    ) + timedelta(milliseconds=400)  # the loop was blocked for 3 s
    await scheduler.run_pending()
    assert queue.job_ids == [job_id_for(task.id, at(12, 0, s)) for s in (1, 2, 3)]


async def test_a_task_disabled_behind_the_schedulers_back_is_dropped_and_can_come_back(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    from sqlalchemy import update

    from asyncsched.store import ScheduledTask

    task = await scheduler.register_task(name="t", type="interval", schedule="1 minute", function=FUNCTION)
    async with scheduler._session() as session, session.begin():  # e.g. an operator's SQL
        await session.execute(update(ScheduledTask).where(ScheduledTask.id == task.id).values(enabled=False))
    clock.now = at(12, 1)
    assert await scheduler.run_pending() == []
    assert await scheduler.index.score(task.id) is None
    await scheduler.enable(task.id)
    clock.now = at(12, 2)
    assert [f.tick for f in await scheduler.run_pending()] == [at(12, 2)]


async def test_an_anchor_with_microseconds_fires_each_tick_once(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    task = await scheduler.register_task(
        name="t",
        type="interval",
        schedule="1 second",
        start="2026-06-01T11:00:00.123456+00:00",
        function=FUNCTION,
    )
    clock.now = at(12, 0, 3) + timedelta(milliseconds=500)
    await scheduler.run_pending()
    assert len(queue.job_ids) == len(set(queue.job_ids)) == 4
    assert [t for _, t in await scheduler.index.fired()] == [
        int((at(12, 0, s) + timedelta(milliseconds=123)).timestamp() * 1000) for s in (0, 1, 2, 3)
    ]
    assert task.id


async def test_a_schedule_edited_in_sql_behind_our_back_is_replanned_not_spun_on(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    from sqlalchemy import update

    from asyncsched.store import ScheduledTask

    task = await scheduler.register_task(name="t", type="interval", schedule="1 minute", function=FUNCTION)
    async with scheduler._session() as session, session.begin():
        await session.execute(
            update(ScheduledTask).where(ScheduledTask.id == task.id).values(schedule="1 hour")
        )
    clock.now = at(12, 1)
    assert await scheduler.run_pending() == []
    assert await scheduler.index.score(task.id) == int(at(13).timestamp() * 1000)
    clock.now = at(13)
    assert [f.tick for f in await scheduler.run_pending()] == [at(13)]


async def test_a_running_replica_reloads_only_the_task_a_change_notice_names(
    sched_settings: Settings, queue: RecordingQueue
) -> None:
    """An edit of one task (its arguments: nothing the index sees) reaches a running replica through its
    change notice, which reloads that row alone (with 100,000 tasks, a full reload per edit is seconds)."""
    async with (
        TaskScheduler(settings=sched_settings, queue=queue, fire=True) as firer,
        TaskScheduler(settings=sched_settings, queue=queue) as api,
    ):
        other = await api.register_task(name="o", type="interval", schedule="1 hour", function=FUNCTION)
        task = await api.register_task(name="t", type="interval", schedule="1 hour", function=FUNCTION)
        await wait_for(lambda: _true(firer._listener_ready.is_set() and task.id in firer._cache))
        full = 0
        original = firer._cache.reload

        async def counting(sessions: object) -> None:
            nonlocal full
            full += 1
            await original(sessions)  # type: ignore[arg-type]

        firer._cache.reload = counting  # type: ignore[method-assign]
        await api.update_task(task.id, kwargs={"v": 2})
        await wait_for(
            lambda: _true((view := firer._cache.get(task.id)) is not None and view.kwargs == {"v": 2})
        )
        await api.unregister_task(other.id)
        await wait_for(lambda: _true(other.id not in firer._cache))
        assert full == 0
        assert firer._cache.fireable == 1


@pytest.mark.parametrize("when", ["before the start", "while it runs"])
async def test_index_keys_of_a_wrong_type_are_rebuilt_and_firing_goes_on(
    sched_settings: Settings, queue: RecordingQueue, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    """A foreign client's SET over the schedule index (its next-fire zset, signatures, leases): the replica
    logs the key, deletes it and rebuilds the index from SQL, and fires on; it used to die at start-up
    (or fail every pass, firing nothing, while it ran)."""
    from asyncsched._redis import create_redis

    redis = create_redis(sched_settings.redis_url)
    async with TaskScheduler(settings=sched_settings, queue=queue) as api:
        await api.register_task(name="t", type="interval", schedule="1 second", function=FUNCTION)
        index = api.index
    keys = (index.next_key, index.sig_key, index.pending_key, index.held_key)

    async def spoil() -> None:
        for key in keys:
            await redis.delete(key)
            await redis.set(key, "not the index")

    if when == "before the start":
        await spoil()
    caplog.set_level("ERROR", logger="asyncsched.scheduler")
    async with TaskScheduler(settings=sched_settings, queue=queue, fire=True):
        if when == "while it runs":
            await wait_for(lambda: _true(len(queue.calls) >= 1))
            await spoil()
        fired = len(queue.calls)
        await wait_for(lambda: _true(len(queue.calls) > fired + 1))
    types = [await redis.type(key) for key in keys[:2]]
    await redis.aclose()
    assert types == [b"zset", b"hash"]
    assert any(index.next_key in r.getMessage() and "string" in r.getMessage() for r in caplog.records)
