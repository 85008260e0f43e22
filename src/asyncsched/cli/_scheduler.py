"""``asyncsched scheduler``: register tasks files and fire schedules (run as many replicas as you like)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from contextlib import AsyncExitStack
from typing import Any

from ..config import Settings
from . import _sidecars as sidecars

log = logging.getLogger("asyncsched.scheduler")


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "scheduler", help="fire scheduled tasks (any number of replicas share one Redis)"
    )
    parser.add_argument(
        "--tasks", action="append", metavar="FILE", help="tasks.yaml to register (repeatable)"
    )
    parser.add_argument("--agent", help="agent name of the tasks files (env ASYNCSCHED_AGENT)")
    parser.add_argument("--for", dest="duration", type=float, help="stop after this many seconds")
    sidecars.add_flags(parser, default=True)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.replace(tasks=tuple(args.tasks) if args.tasks else None, agent=args.agent)
    if os.getcwd() not in sys.path:  # task functions of the project we are started in (like `rq worker`)
        sys.path.insert(0, os.getcwd())
    return asyncio.run(_serve(settings, args.duration, history=args.history, events=args.events))


async def _serve(settings: Settings, duration: float | None, *, history: bool, events: bool) -> int:
    from .._redis import check_redis, create_redis
    from ..scheduler import TaskScheduler
    from ..store import Database

    redis = create_redis(settings.redis_url)
    try:
        await check_redis(redis, settings.redis_url)
        from .._redis._durability import warn_if_redis_may_lose_data

        await warn_if_redis_may_lose_data(redis, settings, "scheduler")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        # SQLite is migrated on entry; PostgreSQL needs `asyncsched db upgrade` first (the store's policy).
        async with (
            AsyncExitStack() as stack,
            Database(settings=settings) as db,
            TaskScheduler(redis, settings=settings, db=db) as scheduler,
        ):
            await sidecars.enter(
                stack, redis, settings, component="scheduler", history=history, events=events
            )
            await db.check()
            for path in settings.tasks:  # all files are checked before anything fires
                tasks = await scheduler.register_file(path, settings.agent)
                log.info("registered %d task(s) of %s for agent %s", len(tasks), path, settings.agent)
            runner = asyncio.create_task(scheduler.run())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({runner, stopper}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
            for task in (runner, stopper):
                task.cancel()
            await asyncio.wait({runner}, timeout=10)
            if runner.done() and not runner.cancelled() and runner.exception() is not None:
                raise runner.exception()  # type: ignore[misc]
        log.info("scheduler stopped")
    finally:
        await redis.aclose()
    return 0
