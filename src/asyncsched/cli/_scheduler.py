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

from .. import _metrics
from .. import _sidecars as sidecars
from ..config import Settings
from ._common import Subcommands

log = logging.getLogger("asyncsched.scheduler")


def register(sub: Subcommands) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "scheduler", help="fire scheduled tasks (any number of replicas share one Redis)"
    )
    parser.add_argument(
        "--tasks", action="append", metavar="FILE", help="tasks.yaml to register (repeatable)"
    )
    parser.add_argument("--agent", help="agent name of the tasks files (env ASYNCSCHED_AGENT)")
    parser.add_argument("--for", dest="duration", type=float, help="stop after this many seconds")
    sidecars.add_flags(parser, default=True)
    _metrics.add_flags(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.replace(tasks=tuple(args.tasks) if args.tasks else None, agent=args.agent)
    from .._control import warn_if_memory

    warn_if_memory(settings, "scheduler")
    if os.getcwd() not in sys.path:  # task functions of the project we are started in (like `rq worker`)
        sys.path.insert(0, os.getcwd())
    return asyncio.run(_serve(settings, args.duration, history=args.history, events=args.events, args=args))


async def _serve(
    settings: Settings, duration: float | None, *, history: bool, events: bool, args: Any = None
) -> int:
    from .._control import ControlPlane

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    # All files are checked before anything fires; the database is migrated on first use.
    plane = ControlPlane(
        settings=settings,
        scheduler=True,
        history=history,
        events=events,
        tasks=settings.tasks,
        agent=settings.agent,
        component="scheduler",
    )
    async with plane, AsyncExitStack() as stack:
        if getattr(args, "metrics_port", None) is not None and plane.scheduler is not None:
            from .._redis import create_redis

            redis = create_redis(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            plane.scheduler.metrics = await _metrics.expose(
                stack, args, redis, settings.key_prefix, worker=False
            )
        runner = asyncio.create_task(plane.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({runner, stopper}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        for task in (runner, stopper):
            task.cancel()
        await asyncio.wait({runner, stopper}, timeout=10)
        if runner.done() and not runner.cancelled() and runner.exception() is not None:
            raise runner.exception()  # type: ignore[misc]
    log.info("scheduler stopped")
    return 0
