"""rq-scheduler's jobs, created by the real ``rq_scheduler`` package, fired by our bridge exactly as its own
``Scheduler.enqueue_jobs`` fires them (differential runs on every backend), once across replicas."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time
from rq_scheduler import Scheduler

from asyncsched import _keys
from asyncsched._lifecycle import unpack
from asyncsched._redis import create_redis
from asyncsched.config import Settings
from asyncsched.scheduler._rqscheduler import RQSchedulerBridge, list_rq_scheduler_jobs
from asyncsched.scheduler._rqscheduler_jobs import cron_next, plain_loads

from ..rqhelp import sync_redis

T0 = datetime(2026, 6, 1, 11, 58, 0, tzinfo=UTC)  # a Monday
SET = "rq:scheduler:scheduled_jobs"


def naive(dt: datetime) -> datetime:
    """rq-scheduler takes naive UTC datetimes."""
    return dt.astimezone(UTC).replace(tzinfo=None)


def create_jobs(url: str) -> None:
    """The same five schedules on either side, made by rq-scheduler itself at T0."""
    conn = sync_redis(url)
    with freeze_time(naive(T0)):
        s = Scheduler(connection=conn, queue_name="default")
        s.schedule(naive(T0), "tests.jobs.add", args=[1, 2], interval=60, repeat=3, id="every-minute-x3")
        meta = {"owner": "ops"}
        s.schedule(naive(T0), "tests.jobs.echo", args=["x"], interval=90, id="every-90s", meta=meta)
        s.cron("*/5 * * * *", "tests.jobs.echo", args=["cron"], id="cron-5min", queue_name="crons")
        s.cron("0 12 * * 1-5", "tests.jobs.echo", kwargs={"k": 1}, repeat=2, id="weekdays-noon-x2")
        s.enqueue_at(naive(T0 + timedelta(seconds=30)), "tests.jobs.echo", "once", job_id="one-shot")
    conn.close()


STEPS = [T0 + timedelta(seconds=s) for s in (0, 30, 60, 90, 120, 150, 420)] + [
    datetime(2026, 6, 2, 12, 0, 0, tzinfo=UTC),
    datetime(2026, 6, 2, 12, 0, 1, tzinfo=UTC),
    datetime(2026, 6, 3, 12, 0, 0, tzinfo=UTC),
]


def observe(url: str) -> dict[str, Any]:
    """What a step left: the set, each job's meta/status/timeout, and what was queued (then 'run' it)."""
    conn = sync_redis(url)
    queued = {}
    for queue in ("default", "crons"):
        ids = [i.decode() for i in conn.lrange(f"rq:queue:{queue}", 0, -1)]
        conn.delete(f"rq:queue:{queue}")
        queued[queue] = ids
        for job_id in ids:  # a worker ran it
            conn.hset(f"rq:job:{job_id}", "status", "finished")
    jobs = {}
    for key in sorted(conn.keys("rq:job:*")):
        h = conn.hgetall(key)
        jobs[key.decode()] = (
            plain_loads(h[b"meta"]) if h.get(b"meta") else None,
            h.get(b"timeout"),
            h.get(b"origin"),
        )
    state = {
        "set": {m.decode(): s for m, s in conn.zrange(SET, 0, -1, withscores=True)},
        "queued": queued,
        "jobs": jobs,
    }
    conn.close()
    return state


def run_steps(url: str, fire: Callable[[datetime], None]) -> list[dict[str, Any]]:
    create_jobs(url)
    out = []
    for when in STEPS:
        fire(when)
        out.append(observe(url))
    return out


def flush(url: str) -> None:
    conn = sync_redis(url)
    conn.flushall()
    conn.close()


def test_bridge_fires_as_rq_scheduler_does(redis_url: str) -> None:
    """Interval with repeat, interval forever, cron (UTC wall clock), cron with repeat, one-shot."""

    def theirs(when: datetime) -> None:
        with freeze_time(naive(when)):
            Scheduler(connection=sync_redis(redis_url)).enqueue_jobs()

    def ours(when: datetime) -> None:
        async def go() -> None:
            client = create_redis(redis_url)
            try:
                await RQSchedulerBridge(client, Settings(), zone=UTC).fire_due(when)
            finally:
                await client.aclose()

        asyncio.run(go())

    expected = run_steps(redis_url, theirs)
    flush(redis_url)
    got = run_steps(redis_url, ours)
    assert got == expected
    # and the scenario did exercise every rule
    fired = [job for step in got for q in step["queued"].values() for job in q]
    assert fired.count("every-minute-x3") == 3
    assert fired.count("one-shot") == 1
    assert fired.count("weekdays-noon-x2") == 2
    assert "every-minute-x3" not in got[-1]["set"]
    assert "weekdays-noon-x2" not in got[-1]["set"]
    assert got[0]["jobs"]["rq:job:every-90s"][0] == {"owner": "ops", "interval": 90}
    assert got[5]["queued"]["crons"] == []
    assert got[4]["queued"]["crons"] == ["cron-5min"]


async def test_runs_are_attempts_in_the_lifecycle_stream(redis_url: str) -> None:
    """Each run is the next attempt of the job id, recorded as rq-scheduler's (agent) in the history feed."""
    create_jobs(redis_url)
    client = create_redis(redis_url)
    try:
        bridge = RQSchedulerBridge(client, Settings(), zone=UTC)
        for when in STEPS[:5]:
            await bridge.fire_due(when)
            await client.delete("rq:queue:default", "rq:queue:crons")
            for job_id in ("every-minute-x3", "every-90s", "one-shot"):
                await client.hset(f"rq:job:{job_id}", "status", "finished")
        rows = await client.xrange(_keys.lifecycle_stream("rq"))
        records = [unpack(f) for _id, f in rows]  # (either record format)
        runs = [
            (f["attempt"], f["agent_name"], f["task_name"], f["function"])
            for f in records
            if f["job_id"] == "every-minute-x3"
        ]
        assert runs == [(str(n), "rq-scheduler", "every-minute-x3", "tests.jobs.add") for n in (1, 2, 3)]
    finally:
        await client.aclose()


async def test_a_run_still_pending_is_not_enqueued_twice(redis_url: str) -> None:
    create_jobs(redis_url)
    client = create_redis(redis_url)
    try:
        bridge = RQSchedulerBridge(client, Settings(), zone=UTC)
        first = {f.job_id: f for f in await bridge.fire_due(T0)}
        assert first["every-minute-x3"].enqueued
        again = {f.job_id: f for f in await bridge.fire_due(T0 + timedelta(seconds=60))}
        assert not again["every-minute-x3"].enqueued  # still queued: skipped, rescheduled, repeat kept
        queued = await client.lrange("rq:queue:default", 0, -1)
        assert queued == [b"every-90s", b"every-minute-x3", b"one-shot"]
        meta = plain_loads(await client.hget("rq:job:every-minute-x3", "meta"))
        assert meta["repeat"] == 2
        assert await client.zscore(SET, "every-minute-x3") == (T0 + timedelta(seconds=120)).timestamp()
    finally:
        await client.aclose()


async def test_only_under_rq_schedulers_lock(redis_url: str) -> None:
    create_jobs(redis_url)
    client = create_redis(redis_url)
    try:
        bridge = RQSchedulerBridge(client, Settings(), zone=UTC)
        await client.set("rq:scheduler_lock", "1733000000.5", ex=60)  # a live rqscheduler's pass
        assert await bridge.fire_due(T0) == []
        assert bridge.lock_busy
        assert await client.llen("rq:queue:default") == 0
        assert await client.get("rq:scheduler_lock") == b"1733000000.5"  # never taken from its holder
        await client.delete("rq:scheduler_lock")
        assert {f.job_id for f in await bridge.fire_due(T0)} == {"every-minute-x3", "every-90s"}
        assert await client.exists("rq:scheduler_lock") == 0  # released after the pass
    finally:
        await client.aclose()


async def test_replicas_fire_each_job_once(redis_url: str) -> None:
    create_jobs(redis_url)
    clients = [create_redis(redis_url) for _ in range(3)]
    try:
        bridges = [RQSchedulerBridge(c, Settings(), zone=UTC) for c in clients]
        for when in STEPS[:5]:
            results = await asyncio.gather(*(b.fire_due(when) for b in bridges))
            while any(b.lock_busy for b in bridges):  # the losers try again, as their loop does
                results += await asyncio.gather(*(b.fire_due(when) for b in bridges if b.lock_busy))
            names = [f.job_id for r in results for f in r]
            assert len(names) == len(set(names))
            await clients[0].delete("rq:queue:default", "rq:queue:crons")
            for name in names:
                await clients[0].hset(f"rq:job:{name}", "status", "finished")
    finally:
        for c in clients:
            await c.aclose()


async def test_missing_hash_is_dropped_and_unreadable_meta_reported(redis_url: str) -> None:
    client = create_redis(redis_url)
    try:
        await client.zadd(SET, {"ghost": T0.timestamp(), "opaque": T0.timestamp()})
        meta = pickle.dumps({"interval": 60, "when": datetime(2026, 1, 1)})  # a global: not plain data
        await client.hset(
            "rq:job:opaque", mapping={"status": "scheduled", "origin": "default", "meta": meta, "data": b""}
        )
        bridge = RQSchedulerBridge(client, Settings(), zone=UTC)
        assert await bridge.fire_due(T0) == []
        assert await client.zscore(SET, "ghost") is None
        assert await client.zscore(SET, "opaque") == T0.timestamp()  # left alone, reported
        [job] = await list_rq_scheduler_jobs(client)
        assert job.problem is not None
        assert "datetime" in job.problem
        assert "ASYNCSCHED_ACCEPT_PICKLE" in job.problem
        trusted = RQSchedulerBridge(client, Settings(accept_pickle=True), zone=UTC)
        assert [f.job_id for f in await trusted.fire_due(T0)] == ["opaque"]
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("cron", "now", "expected"),
    [
        ("*/5 * * * *", datetime(2026, 6, 1, 11, 58, 7), datetime(2026, 6, 1, 12, 0)),
        ("0 0 13 * 5", datetime(2026, 6, 1), datetime(2026, 11, 13)),  # Friday 13th: day AND weekday
        ("30 12 * * * 2027", datetime(2026, 6, 1), datetime(2027, 1, 1, 12, 30)),  # crontab's year field
        ("15 0 9 * * * *", datetime(2026, 6, 1, 9, 0, 20), datetime(2026, 6, 2, 9, 0, 15)),  # seconds first
        ("@daily", datetime(2026, 6, 1, 9), datetime(2026, 6, 2)),
    ],
)
def test_cron_dialect_is_crontabs(cron: str, now: datetime, expected: datetime) -> None:
    from crontab import CronTab

    theirs = CronTab(cron).next(now=now, return_datetime=True, default_utc=False)
    assert theirs == expected
    assert cron_next(cron, now.replace(tzinfo=UTC), UTC) == int(expected.replace(tzinfo=UTC).timestamp())


async def test_live_rqscheduler_instances_are_read(redis_url: str) -> None:
    from asyncsched.scheduler._rqscheduler import live_rqschedulers

    theirs = Scheduler(connection=sync_redis(redis_url), name="box-1", interval=5)
    client = create_redis(redis_url)
    try:
        assert await live_rqschedulers(client) == []
        theirs.register_birth()
        assert await live_rqschedulers(client) == ["box-1"]
        theirs.register_death()
        assert await live_rqschedulers(client) == []
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("cron", "ours"),
    [
        ("*/5 * * * *", "*/5 * * * *"),
        ("0 9 * * 1-5", "0 9 * * 1-5"),
        ("0 9 * * * *", "0 9 * * *"),  # crontab's year field, unrestricted
        ("30 0 9 * * * *", "0 9 * * * 30"),  # crontab's seconds first -> ours last
        ("@daily", "@daily"),
    ],
)
def test_import_maps_crontab_onto_our_cron(cron: str, ours: str) -> None:
    from asyncsched.cli._rqscheduler_import import _cron

    assert _cron(cron) == ours


@pytest.mark.parametrize(
    ("cron", "why"),
    [("0 9 * * * 2027", "restricts the year"), ("0 0 13 * 5", "restricts both day and weekday")],
)
def test_import_refuses_what_our_cron_would_read_differently(cron: str, why: str) -> None:
    from asyncsched.cli._rqscheduler_import import _cron

    with pytest.raises(ValueError, match=why):
        _cron(cron)


async def test_the_fire_script_refuses_a_stale_read_or_a_lost_lock(redis_url: str) -> None:
    """The guards behind 'once': a job moved since it was read is not fired; nor is anything once the
    lock is no longer ours (expired and taken by rqscheduler, say)."""
    from asyncsched.scheduler._rqscheduler import _LOST_LOCK

    create_jobs(redis_url)
    client = create_redis(redis_url)
    try:
        bridge = RQSchedulerBridge(client, Settings(), zone=UTC)
        await client.set("rq:scheduler_lock", "ours")
        stale = T0.timestamp() - 60  # what another firer had moved it from
        assert await bridge._fire_one("every-90s", stale, "ours", T0) is None
        assert await client.llen("rq:queue:default") == 0
        assert await client.zscore(SET, "every-90s") == T0.timestamp()
        await client.set("rq:scheduler_lock", "1733000000.25")  # rqscheduler's now
        assert await bridge._fire_one("every-90s", T0.timestamp(), "ours", T0) is _LOST_LOCK
        assert await client.llen("rq:queue:default") == 0
        await client.set("rq:scheduler_lock", "ours")
        fired = await bridge._fire_one("every-90s", T0.timestamp(), "ours", T0)
        assert fired.enqueued
        assert await client.ttl("rq:scheduler_lock") > 0  # each job fired renews our lease on the lock
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("job_id", "when", "left"),
    [("one-shot", T0 + timedelta(seconds=30), None), ("every-minute-x3", T0, 2)],
)
async def test_a_run_rqscheduler_enqueued_before_it_died_is_not_fired_again(
    redis_url: str, job_id: str, when: datetime, left: int | None
) -> None:
    """rqscheduler stopped (SIGTERM) between pushing a job and moving it in its set leaves the run's tick
    in the set; the job then runs and finishes. The bridge taking over reschedules it: no second run."""
    create_jobs(redis_url)
    conn = sync_redis(redis_url)
    zrem = conn.zrem

    def dies_on_target(key: str, *members: str) -> int:
        if job_id in members:
            raise SystemExit  # what rqscheduler's SIGTERM handler raises, here mid enqueue_job
        return zrem(key, *members)

    conn.zrem = dies_on_target  # type: ignore[method-assign]
    with freeze_time(naive(when)), pytest.raises(SystemExit):
        Scheduler(connection=conn, queue_name="default").enqueue_jobs()
    assert job_id.encode() in conn.lrange("rq:queue:default", 0, -1)
    conn.delete("rq:queue:default")
    conn.hset(f"rq:job:{job_id}", "status", "finished")  # a worker ran it
    conn.close()
    client = create_redis(redis_url)
    try:
        bridge = RQSchedulerBridge(client, Settings(), zone=UTC)
        fired = {f.job_id: f for f in await bridge.fire_due(when + timedelta(seconds=1))}
        assert not fired[job_id].enqueued
        assert job_id.encode() not in await client.lrange("rq:queue:default", 0, -1)
        if left is None:
            assert await client.zscore(SET, job_id) is None
        else:
            meta = plain_loads(await client.hget(f"rq:job:{job_id}", "meta"))
            assert meta["repeat"] == left  # counted down once, by rqscheduler
            assert await client.zscore(SET, job_id) > (when + timedelta(seconds=1)).timestamp()
    finally:
        await client.aclose()
