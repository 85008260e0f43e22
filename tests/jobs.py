"""Task functions used by the queue and worker tests (importable by workers in other processes)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

_events: dict[str, threading.Event] = {}


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


def fail(message: str = "boom") -> None:
    raise ValueError(message)


async def async_fail(message: str = "boom") -> None:
    raise RuntimeError(message)


def none() -> None:
    return None


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def fail_until(path: str, succeed_on: int) -> int:
    """Fail until called ``succeed_on`` times (counted in a file, so it works across processes)."""
    count = 1
    if os.path.exists(path):
        with open(path) as fh:
            count = int(fh.read()) + 1
    with open(path, "w") as fh:
        fh.write(str(count))
    if count < succeed_on:
        raise ValueError(f"attempt {count}")
    return count


def touch_and_sleep(path: str, seconds: float) -> str:
    """Create ``path`` (a signal to the test that the job is running), then sleep."""
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


def touch_and_wait(path: str, release: str, limit: float = 120.0) -> str:
    """Create ``path`` (the job is running), then run until ``release`` exists (the test says so)."""
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    deadline = time.monotonic() + limit
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.02)
    return "released"


async def async_touch_and_sleep(path: str, seconds: float) -> str:
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    await asyncio.sleep(seconds)
    return "slept"


def enqueue_from_thread(redis_url: str) -> str:
    """A sync task that enqueues another job through the sync facade (runs in a worker thread)."""
    from asyncsched.config import Settings
    from asyncsched.sync import TaskQueue

    with TaskQueue(redis_url, settings=Settings(redis_url=redis_url)) as q:
        return q.enqueue("tests.jobs:add", args=(1, 1), agent_name="child")


class NotJSON:
    pass
