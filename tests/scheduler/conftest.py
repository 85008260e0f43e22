"""Scheduler fixtures: a fake clock, a recording stand-in for the queue, schedulers on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from asyncsched.config import Settings
from asyncsched.scheduler import TaskScheduler
from asyncsched.store import Base, create_engine


def jobs_fn(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The function the test tasks schedule."""
    return {"args": args, "kwargs": kwargs}


FUNCTION = "tests.scheduler.conftest:jobs_fn"


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = field(default_factory=lambda: datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def plain(job_id: str) -> str:
    """A tick's job id without the tag of its queue, which the scheduler puts first on a Redis Cluster."""
    return job_id[job_id.index("}") + 1 :] if job_id.startswith("{") else job_id


@dataclass
class RecordingQueue:
    """Stands in for TaskQueue at the scheduler's one enqueue seam and records every call.

    A repeated job id is recorded too (the real queue's ``unique`` would hide it): the scheduler must
    enqueue each tick once, and a second enqueue of a tick means two replicas (or a replica and a lease
    takeover) both believed they owned it. ``hold``, when set, makes ``enqueue`` wait on it (a claimer
    slow between its claim and its enqueue).
    """

    calls: list[dict[str, Any]] = field(default_factory=list)
    fail: int = 0
    hold: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def enqueue(self, func: Any, **kwargs: Any) -> str:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("queue down")
        job_id: str = kwargs["job_id"]
        self.calls.append({"func": func, **kwargs})
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        return job_id

    @property
    def job_ids(self) -> list[str]:
        """The ids enqueued, as ``job_id_for`` makes them (without a cluster's queue tag: :func:`plain`)."""
        return [plain(c["job_id"]) for c in self.calls]


async def create_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    await engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
async def sched_settings(redis_url: str, database_url: str) -> Settings:
    await create_tables(database_url)
    return Settings(redis_url=redis_url, database_url=database_url, agent="test-agent")


@pytest.fixture
async def scheduler(
    sched_settings: Settings, queue: RecordingQueue, clock: Clock
) -> AsyncIterator[TaskScheduler]:
    async with TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as s:
        yield s


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until true; fails the test after ``timeout`` seconds (no fixed sleeps)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
