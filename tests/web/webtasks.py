"""Task functions the web tests schedule and enqueue (importable as ``tests.web.webtasks:...``)."""

from __future__ import annotations

import asyncio


async def add(a: int = 1, b: int = 2) -> int:
    """A quick async job."""
    return a + b


def shout(text: str = "hi") -> str:
    """A quick sync job (runs in a worker thread)."""
    return text.upper()


def boom() -> None:
    """A job that fails."""
    raise ValueError("boom")


async def wait_long(seconds: float = 60.0) -> str:
    """A job that runs long enough to be cancelled."""
    await asyncio.sleep(seconds)
    return "done"


def report(fraction: float = 0.5) -> str:
    """A sync job reporting its progress (current_job().progress)."""
    import asyncsched

    job = asyncsched.current_job()
    assert job is not None
    job.progress(fraction)
    return "reported"
