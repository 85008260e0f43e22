"""Helpers of the store tests: lifecycle producers and a wait helper."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from asyncsched import _keys
from asyncsched._lifecycle import Lifecycle, LifecycleRecord
from asyncsched._redis import is_cluster


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "condition"
) -> None:
    """Await ``predicate()`` until it is true; fail after ``timeout`` seconds (polls, never sleeps blind)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def emit(redis: aioredis.Redis, *records: LifecycleRecord, prefix: str = "rq") -> list[str]:
    """XADD lifecycle records as the queue and worker do; return the entry ids."""
    ids = []
    for record in records:
        stream = _keys.lifecycle_stream(prefix, cluster=is_cluster(redis))
        entry = await redis.xadd(stream, record.encode())  # type: ignore[arg-type]
        ids.append(entry.decode() if isinstance(entry, bytes) else entry)
    return ids


async def emit_earlier(redis: aioredis.Redis, *records: LifecycleRecord, prefix: str = "rq") -> None:
    """XADD lifecycle records as versions before the packed format did: one stream field per field."""
    stream = _keys.lifecycle_stream(prefix, cluster=is_cluster(redis))
    for record in records:
        fields = {
            f.name: str(v) for f in dataclasses.fields(record) if (v := getattr(record, f.name)) is not None
        }
        await redis.xadd(stream, fields)  # type: ignore[arg-type]


T0 = float(int(time.time()) - 3600)
"""A recent whole second (an hour ago): inside any retention window."""


def lifecycle(job_id: str, *, attempt: int = 1, t0: float = T0, **extra: Any) -> dict[str, Any]:
    """Records of a job that was queued, started and succeeded (keyed by kind)."""
    base = {"job_id": job_id, "queue": extra.pop("queue", "default"), "attempt": attempt, **extra}
    return {
        "queued": LifecycleRecord(Lifecycle.QUEUED, enqueued_at=t0, **base),
        "started": LifecycleRecord(Lifecycle.STARTED, started_at=t0 + 1, worker="w1", **base),
        "success": LifecycleRecord(
            Lifecycle.SUCCESS, started_at=t0 + 1, ended_at=t0 + 3.5, worker="w1", result='{"ok": 1}', **base
        ),
    }
