"""``asyncsched info``: settings in force (secrets masked) and whether Redis and the database answer."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from .._redis import check_redis, create_redis, mask_url
from ..config import Settings


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("info", help="show settings and backend health")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_info(settings))


async def _info(settings: Settings) -> int:
    from ..store import check_database, create_engine  # lazy: keeps other subcommands lean

    print(f"redis:    {mask_url(settings.redis_url)}")
    print(f"database: {_mask_db(settings.database_url)}")
    print(f"prefix:   {settings.key_prefix}   queues: {', '.join(settings.queues)}")
    redis = create_redis(settings.redis_url)
    try:
        await check_redis(redis, settings.redis_url)
        print("redis:    ok")
        from ..store._history_loss import history_loss

        loss = await history_loss(redis, settings.key_prefix)
        when = f" (latest loss at {loss.last_loss_at.isoformat()})" if loss.last_loss_at else ""
        print(f"history:  {loss.lost} lifecycle records lost{when}")
    finally:
        await redis.aclose()
    engine = create_engine(settings.database_url)
    try:
        await check_database(engine)
        print("database: ok")
    finally:
        await engine.dispose()
    return 0


def _mask_db(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
