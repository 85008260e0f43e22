"""The state every part of :class:`TaskScheduler` shares (its parts are mixins over this base).

``_scheduler`` (lifetime), ``_crud`` (task definitions), ``_dispatch`` (claiming and enqueueing due
ticks), ``_recovery`` (taking over expired leases) and ``_loop`` (the firing loop, change feed and run-time
flush) each add one concern; this module holds the attributes they share and the small accessors all use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from .._protocols import RunQueue
from .._supervise import Supervised
from ..config import Settings
from ..store.models import ScheduledTask
from ._cache import TaskCache
from ._enqueue import enqueue_run
from ._index import ScheduleIndex

__all__ = ["FLUSH_INTERVAL", "LEASE", "MAX_IDLE", "PASS_SPACING", "SchedulerBase"]

LEASE = timedelta(seconds=60)
"""How long a claimed tick may stay un-enqueued before another replica takes it over."""
MAX_IDLE = 5.0
"""An idle scheduler wakes at the next tick, on a change notice, or after this many seconds at most."""
PASS_SPACING = 0.002
"""Seconds at least between the starts of two firing passes of one replica: under a steady stream of ticks
(1,000/s) a pass takes all that fell due since the last one instead of one pass per tick, and replicas
drift apart in phase, so each claims what fell due since another's pass instead of all racing for each."""
FLUSH_INTERVAL = 1.0
"""last_run_at / next_run_at reach SQL in batches this often."""


class Database(Protocol):
    @property
    def engine(self) -> AsyncEngine: ...

    def session(self) -> Any: ...


class SchedulerBase:
    """Attributes shared by the parts of :class:`TaskScheduler` (set in its ``__init__``)."""

    settings: Settings
    clock: Callable[[], datetime]
    metrics: Any  # an asyncsched._metrics.ProcessMetrics observing each tick fired here
    _redis_arg: str | aioredis.Redis | None
    _db: Database | None
    _queue: RunQueue | None
    _fire: bool
    _redis: aioredis.Redis | None
    _own_redis: bool
    _engine: AsyncEngine | None
    _sessions: Any
    _index: ScheduleIndex | None
    _cache: TaskCache
    _changed: asyncio.Event
    _notices: list[str]  # task ids of the change notices since the last reload ("*": reload everything)
    _version: int
    _sql_updates: dict[str, tuple[datetime | None, datetime | None]]
    # Next tick of each task as this replica last planned it (with the schedule's signature), until SQL holds
    # it: SQL lags behind by up to FLUSH_INTERVAL (more during a database outage), so an index rebuilt after a
    # Redis restart starts from whichever is later and never fires a tick a second time.
    _planned: dict[str, tuple[str, datetime | None]]
    _redis_down: bool
    _sql_down: bool
    _runner: Supervised | None
    _open_lock: asyncio.Lock
    _opened: bool
    _listener_ready: asyncio.Event
    _queue_owned = False
    # what the firing loop read between passes (None / 0: unknown, read it): whether the index exists, and
    # the time (ms) before which no lease can have expired
    _indexed: bool | None = None
    _leases_due_ms = 0
    _pass_at = 0.0  # when the loop's last pass started (event loop time)
    _due_read: list[tuple[str, int]] | None = None  # the due entries it read (a pass uses them, once)
    # leases the loop releases with its next read (None: release each at once, outside the loop)
    _release_later: list[tuple[str, int]] | None = None
    _owned_db: Any = None

    async def _open(self) -> None:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        await self._open()
        async with self._sessions() as session:
            yield session

    @property
    def index(self) -> ScheduleIndex:
        assert self._index is not None, "scheduler not opened"
        return self._index

    async def _get_queue(self) -> RunQueue:
        if self._queue is None:
            await self._open()
            from ..queue import TaskQueue  # type: ignore[import-not-found,unused-ignore]

            queue = TaskQueue(self._redis, settings=self.settings)
            await queue.__aenter__()
            self._queue = queue
            self._queue_owned = True
        return self._queue

    async def _enqueue(
        self, task: ScheduledTask, job_id: str, tick: datetime | None, *, after: str | None = None
    ) -> str:
        """Enqueue one run of ``task`` as ``job_id`` (see :func:`enqueue_run`)."""
        return await enqueue_run(await self._get_queue(), task, job_id, tick, after=after)
