"""Helpers for testing code that uses asyncsched (no sleeps needed)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from .config import Settings
from .worker import Worker

__all__ = ["run_burst"]


async def run_burst(
    queues: Iterable[str] | None = None,
    *,
    redis: str | aioredis.Redis | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> Worker:
    """Run a burst-mode worker until the queues are empty and every job is recorded; returns it."""
    async with Worker(queues, redis=redis, settings=settings, burst=True, **options) as worker:
        await worker.run()
    return worker
