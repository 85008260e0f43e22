"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["stop_task"]


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
