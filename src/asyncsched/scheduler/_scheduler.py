"""``TaskScheduler``: the API over scheduled tasks (SQL) and the firing loop (Redis index -> queue).

Writes go to SQL first (the source of truth), then to the Redis index, then a change notice is published so
every replica reloads within a second. Firing: the earliest due ticks are read from the index, each is
claimed with one Lua script (compare-and-advance of the task's entry) and enqueued with the job id
``sched-<task id>-<tick epoch seconds>`` and ``unique=True``, so a tick runs once whoever claims it, even
after a crash between claim and enqueue (the claim leaves a lease that another replica takes over).

The class is composed of parts with one concern each (``docs/architecture.md``): :class:`~._crud.TaskCrud`
(definitions), :class:`~._dispatch.Dispatch` (claims and enqueues of due ticks), :class:`~._recovery.Recovery`
(expired leases) and :class:`~._loop.Loop` (the loop, change feed and run-time flush), over the shared state
of :class:`~._base.SchedulerBase`; this module holds its construction and lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import redis.asyncio as aioredis

from .. import _tracing
from .._lifetime import Closing
from .._protocols import RunQueue
from .._redis import create_redis, is_client
from .._supervise import Supervised
from ..config import Settings, get_settings
from ._base import FLUSH_INTERVAL, LEASE, MAX_IDLE, Database
from ._cache import TaskCache
from ._crud import TaskCrud
from ._enqueue import Firing, job_id_for
from ._index import ScheduleIndex
from ._loop import Loop

__all__ = ["FLUSH_INTERVAL", "LEASE", "MAX_IDLE", "Firing", "TaskScheduler", "job_id_for"]


class TaskScheduler(TaskCrud, Loop, Closing):
    """Scheduled tasks: register and edit them (any process), and fire them (``fire=True`` or :meth:`run`).

    ::

        async with TaskScheduler() as scheduler:
            for task in await scheduler.load_tasks_from_yaml("tasks.yaml", agent_name="email-agent"):
                await scheduler.register_task(task)
            await scheduler.run()  # fire until cancelled (any number of replicas may do this)

    ``db`` is any object with ``.engine`` and ``.session()`` (``asyncsched.store.Database``); without it an
    engine is made from ``settings.database_url`` and migrated on first use (with ``db`` given, its
    tables must exist: ``asyncsched db upgrade``, :func:`asyncsched.init_db` or ``Database.migrate``).
    ``queue`` is the ``TaskQueue`` runs go to (default: one on ``redis``).
    Methods also work without ``async with``; resources open on first use and close in :meth:`aclose`.
    """

    def __init__(
        self,
        redis: str | aioredis.Redis | None = None,
        *,
        settings: Settings | None = None,
        db: Database | None = None,
        queue: RunQueue | None = None,
        fire: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        _tracing.configure(self.settings)
        self._redis_arg = redis
        self._db = db
        self._queue = queue
        self._fire = fire
        self.clock = clock or (lambda: datetime.now(UTC))
        self._redis = None
        self._own_redis = False
        self._engine = None
        self._sessions = None
        self._index = None
        self._cache = TaskCache()
        self._changed = asyncio.Event()
        self._notices = []
        self._version = -1
        self._sql_updates = {}
        self._planned = {}
        self._redis_down = False
        self._sql_down = False
        self._runner = None
        self._open_lock = asyncio.Lock()
        self._opened = False
        self._listener_ready = asyncio.Event()
        self.metrics = None

    # ------------------------------------------------------------------ lifetime
    async def __aenter__(self) -> TaskScheduler:
        await self._open()
        if self._fire:  # supervised: a crash is logged and the loop restarted with backoff
            self._runner = Supervised("asyncsched-scheduler", self.run).start()
        return self

    async def _open(self) -> None:
        async with self._open_lock:
            if self._opened:
                return
            if is_client(self._redis_arg):
                self._redis = self._redis_arg
            else:
                self._redis = create_redis(self._redis_arg or self.settings.redis_url)
                self._own_redis = True
            if self._db is not None:
                self._engine = self._db.engine
                self._sessions = self._db.session
            else:
                # Our own handle on the configured database, created or migrated on first use as by every
                # entry point (any dialect; concurrent first uses are serialised by the store).
                from ..store import Database

                owned = Database(settings=self.settings, auto_migrate=True)
                await owned.__aenter__()
                self._owned_db = owned
                self._engine = owned.engine
                self._sessions = owned.session
            self._index = ScheduleIndex(self._redis, self.settings.key_prefix)
            self._opened = True

    async def aclose(self) -> None:
        """Stop firing, write pending run times to SQL, close what this scheduler opened."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.stop()
        if not self._opened:
            return
        with contextlib.suppress(Exception):
            await self._flush()
        if self._queue_owned and self._queue is not None:
            with contextlib.suppress(Exception):
                await self._queue.__aexit__(None, None, None)
            self._queue = None
        if self._owned_db is not None:
            await self._owned_db.aclose()
            self._owned_db = None
        if self._own_redis and self._redis is not None:
            await self._redis.aclose()
        self._opened = False
