"""What ``asyncsched info`` reports, in the style of ``rq info``: backends' health, queues with counts per
state, workers with their current jobs, and the schedulers (asyncsched's index, live rqscheduler processes).

asyncsched's scheduler replicas do not register themselves (any replica fires any due tick); their health
shows in the shared index: how many ticks are overdue and by how much (the tick lag), how many claimed
ticks wait to be enqueued, and the last tick fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

from .._keys import sched_fired, sched_next, sched_pending
from .._redis import check_redis, create_redis, mask_url
from .._redis.cluster import is_cluster
from ..config import Settings
from ._common import EXIT_OK, EXIT_UNAVAILABLE, emit_json, fail, print_table, when
from ._queues import queue_rows, queue_table

__all__ = ["collect", "show"]


async def _redis_section(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """Health of Redis and, when it answers, the queue/worker/scheduler picture."""
    from ..queue import TaskQueue

    redis = create_redis(settings.redis_url)
    try:
        try:
            await asyncio.wait_for(check_redis(redis, settings.redis_url), 10)
        except Exception as exc:
            return {"status": f"unavailable: {exc}"}, {}
        health: dict[str, Any] = {"status": "ok", "version": None}
        with contextlib.suppress(Exception):  # the embedded server (fakeredis) has no INFO
            health["version"] = (await redis.info("server")).get("redis_version")
        from ..store._history_loss import history_loss

        loss = await history_loss(redis, settings.key_prefix)
        health["history_lost"] = {"lost": loss.lost, "last_loss_at": loss.last_loss_at}
        async with TaskQueue(redis, settings=settings) as queue:
            workers = [
                {
                    "name": w.name,
                    "state": w.state,
                    "queues": w.queues,
                    "current_jobs": w.current_jobs,
                    "last_heartbeat": w.last_heartbeat,
                    "successful": w.successful_job_count,
                    "failed": w.failed_job_count,
                }
                for w in await queue.workers()
            ]
            state: dict[str, Any] = {"queues": await queue_rows(queue), "workers": workers}
            state["limits"] = [usage.as_dict() for usage in await queue.limits_usage()]
        state["schedulers"] = await _schedulers(redis, settings)
        return health, state
    finally:
        await redis.aclose()


async def _schedulers(redis: Any, settings: Settings) -> dict[str, Any]:
    from ..scheduler._rqscheduler import live_rqschedulers

    p = settings.key_prefix
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        c = is_cluster(redis)
        pipe.zcard(sched_next(p, cluster=c))
        pipe.zcount(sched_next(p, cluster=c), "-inf", now_ms)
        pipe.zrange(sched_next(p, cluster=c), 0, 0, withscores=True)
        pipe.zcard(sched_pending(p, cluster=c))
        pipe.xrevrange(sched_fired(p, cluster=c), count=1)
        indexed, overdue, first, pending, fired = await pipe.execute()
    lag = max(0.0, (now_ms - first[0][1]) / 1000) if first else 0.0
    last = None
    if fired:
        entry_id = fired[0][0].decode()
        last = {"task_id": fired[0][1].get(b"task", b"").decode(), "at_ms": int(entry_id.split("-")[0])}
    return {
        "tasks_indexed": indexed,
        "ticks_overdue": overdue,
        "tick_lag_seconds": round(lag, 3),
        "ticks_claimed_pending": pending,
        "last_fired": last,
        "rqscheduler_instances": await live_rqschedulers(redis, p),
    }


async def _database(settings: Settings) -> dict[str, Any]:
    from ..store import check_database, create_engine

    engine = create_engine(settings.database_url)
    try:
        await asyncio.wait_for(check_database(engine), 10)
        return {"status": "ok"}
    except Exception as exc:
        return {"status": f"unavailable: {exc}"}
    finally:
        await engine.dispose()


async def collect(settings: Settings) -> dict[str, Any]:
    """The whole picture as plain data (what ``--json`` prints)."""
    from sqlalchemy.engine import make_url

    (redis_health, state), db_health = await asyncio.gather(_redis_section(settings), _database(settings))
    return {
        "settings": {
            "redis_url": mask_url(settings.redis_url),
            "database_url": make_url(settings.database_url).render_as_string(hide_password=True),
            "key_prefix": settings.key_prefix,
            "queues": list(settings.queues),
        },
        "redis": redis_health,
        "database": db_health,
        **state,
    }


def _print(data: dict[str, Any]) -> None:
    s = data["settings"]
    print(f"redis:    {s['redis_url']}  {data['redis']['status']}", end="")
    print(f" (Redis {data['redis']['version']})" if data["redis"].get("version") else "")
    print(f"database: {s['database_url']}  {data['database']['status']}")
    print(f"prefix:   {s['key_prefix']}   queues: {', '.join(s['queues'])}")
    loss = data["redis"].get("history_lost")
    if loss is not None:
        at = loss["last_loss_at"]
        print(
            f"history:  {loss['lost']} lifecycle records lost"
            + (f" (latest loss at {at.isoformat()})" if at else "")
        )
    if "queues" not in data:
        return
    print()
    print_table(queue_table(data["queues"]), "no queues")
    print()
    rows: list[tuple[Any, ...]] = [("WORKER", "STATE", "QUEUES", "CURRENT JOBS", "HEARTBEAT", "OK", "FAILED")]
    for w in data["workers"]:
        current = ", ".join(w["current_jobs"][:3]) + (" ..." if len(w["current_jobs"]) > 3 else "")
        rows.append(
            (w["name"], w["state"], ",".join(w["queues"]), current or "-", when(w["last_heartbeat"]),
             w["successful"], w["failed"])
        )  # fmt: skip
    print_table(rows, "no workers")
    if data.get("limits"):
        print()
        print_table(limit_table(data["limits"]), "no limits")
    sched = data["schedulers"]
    print()
    print(
        f"scheduler: {sched['tasks_indexed']} task(s) indexed, {sched['ticks_overdue']} tick(s) overdue "
        f"(lag {sched['tick_lag_seconds']} s), {sched['ticks_claimed_pending']} claimed tick(s) pending"
    )
    if sched["last_fired"]:
        fired_at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sched["last_fired"]["at_ms"] / 1000))
        print(f"           last fired: task {sched['last_fired']['task_id']} at {fired_at} UTC")
    if sched["rqscheduler_instances"]:
        print(f"rqscheduler processes: {', '.join(sched['rqscheduler_instances'])}")


def limit_table(limits: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows of the limits in use: their bound and how many jobs run, started in the window and wait."""
    rows: list[tuple[Any, ...]] = [("LIMIT", "KIND", "MAX", "RATE", "RUNNING", "STARTED", "WAITING")]
    for lim in limits:
        rate = f"{lim['rate']}/{lim['period']:g}s" if lim["rate"] else "-"
        rows.append(
            (lim["key"], lim["kind"], lim["max_concurrency"] or "-", rate, lim["running"],
             lim["started"] if lim["rate"] else "-", lim["waiting"])
        )  # fmt: skip
    return rows


def _healthy(data: dict[str, Any]) -> bool:
    return bool(data["redis"]["status"] == "ok" and data["database"]["status"] == "ok")


async def show(settings: Settings, *, as_json: bool, interval: float | None, count: int | None) -> int:
    """Print the picture once, or every ``interval`` seconds (``count`` times, or until Ctrl-C).

    Exit 0 when Redis and the database answer (at the last refresh), else 3.
    """
    n = 0
    while True:
        data = await collect(settings)
        n += 1
        if as_json:
            emit_json(data)
        else:
            if interval is not None and sys.stdout.isatty():
                print("\x1b[2J\x1b[H", end="")  # clear the screen, as rq info --interval does
            _print(data)
            if interval is not None:
                print(f"\n{time.strftime('%H:%M:%S')}  refreshing every {interval:g} s (Ctrl-C to stop)")
        sys.stdout.flush()
        if interval is None or (count is not None and n >= count):
            if _healthy(data):
                return EXIT_OK
            bad = [
                f"{name} {data[name]['status']}"
                for name in ("redis", "database")
                if data[name]["status"] != "ok"
            ]
            return fail("; ".join(bad), EXIT_UNAVAILABLE)
        await asyncio.sleep(interval)
