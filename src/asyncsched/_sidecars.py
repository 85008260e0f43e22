"""The control-plane companions a process can run beside its main loop, shared by the worker and
scheduler commands: the history ``Recorder`` (lifecycle stream -> SQL), the ``LifecyclePublisher``
(lifecycle stream -> ``task.*`` events) and ``system.startup``/``system.shutdown`` announcements.

Both consumers are Redis consumer groups, so any number of processes may run them: each record is handled
once. ``asyncsched run`` and ``asyncsched scheduler`` run them by default; ``asyncsched worker`` keeps the
hot path lean and runs them only when asked (``--history``, ``--events``).
"""

from __future__ import annotations

import argparse
import logging
from contextlib import AsyncExitStack

import redis.asyncio as aioredis

from .config import Settings

log = logging.getLogger("asyncsched")


def add_flags(parser: argparse.ArgumentParser, *, default: bool | None) -> None:
    """``--history/--no-history`` and ``--events/--no-events``, on or off by ``default`` (``None``: as the
    worker's ``--with-scheduler``)."""
    word = {True: "default on", False: "default off", None: "default: on with the scheduler"}[default]
    parser.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=default,
        help=f"record job history into the database (DATABASE_URL) in this process ({word})",
    )
    parser.add_argument(
        "--events",
        action=argparse.BooleanOptionalAction,
        default=default,
        help=f"publish task.* lifecycle events on the event bus from this process ({word})",
    )


async def enter(
    stack: AsyncExitStack,
    redis: aioredis.Redis,
    settings: Settings,
    *,
    component: str,
    history: bool,
    events: bool,
) -> None:
    """Enter the companions asked for on ``stack``, and announce ``component`` on the bus."""
    from .events import EventBus, open_publisher, system_events

    bus = await stack.enter_async_context(EventBus(redis, settings=settings))
    if history:
        from .store import Database, open_recorder

        db = await stack.enter_async_context(Database(settings=settings))
        await db.check()
        await stack.enter_async_context(open_recorder(redis, db=db, settings=settings))
        log.info("recording job history into %s", db.url.render_as_string(hide_password=True))
    if events:
        await stack.enter_async_context(open_publisher(redis, settings=settings, bus=bus))
    await stack.enter_async_context(system_events(bus, component, settings.agent))
