"""Small helpers shared by the bus, the durable consumers and the lifecycle publisher."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

__all__ = ["ensure_group", "stop_task"]


async def ensure_group(redis: aioredis.Redis, stream: str, group: str) -> None:
    """Create consumer group ``group`` of ``stream`` at the stream's end (creating the stream), unless it
    exists already."""
    try:
        await redis.xgroup_create(stream, group, id="$", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def stop_task(task: asyncio.Task[Any], *, grace: float = 0.0) -> None:
    """Let ``task`` finish for up to ``grace`` seconds, then cancel it until it is done.

    Cancellation is repeated because a client library may swallow one that lands at an unlucky moment
    (redis-py does during some connection steps); the task's own loop condition ends it after that.
    """
    if grace > 0:
        await asyncio.wait({task}, timeout=grace)
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
