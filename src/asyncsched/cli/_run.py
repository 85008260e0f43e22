"""``asyncsched run``: every component in one process on the embedded defaults (filled by the web issue)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from .._redis import check_redis, create_redis
from ..config import Settings
from ..store import Base, check_database, create_engine

log = logging.getLogger("asyncsched.run")


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "run", help="run scheduler, worker, event bus and HTTP API in one process"
    )
    parser.add_argument("--tasks", action="append", help="tasks.yaml file (repeatable)")
    parser.add_argument("--agent", help="agent name for the tasks files")
    parser.add_argument("--host", help="HTTP host")
    parser.add_argument("--port", type=int, help="HTTP port")
    parser.add_argument("--for", dest="duration", type=float, help="stop after this many seconds")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.replace(
        tasks=tuple(args.tasks) if args.tasks else None, agent=args.agent, host=args.host, port=args.port
    )
    return asyncio.run(_run(settings, args.duration))


async def _run(settings: Settings, duration: float | None) -> int:
    redis = create_redis(settings.redis_url)
    engine = create_engine(settings.database_url)
    try:
        await check_redis(redis, settings.redis_url)
        await check_database(engine)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        log.info("asyncsched is up (redis %s); press Ctrl-C to stop", settings.redis_url.split("@")[-1])
        await asyncio.sleep(duration if duration is not None else float("inf"))
    finally:
        await redis.aclose()
        await engine.dispose()
    return 0
