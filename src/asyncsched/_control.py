"""The control plane a process can host: scheduler, history recorder and lifecycle publisher.

``rq worker --with-scheduler`` fires RQ's schedules from inside a worker; ``python -m asyncsched.worker``
(and ``asyncsched worker --with-scheduler``) does the same with :class:`ControlPlane`, and
:func:`asyncsched.lifespan` (``_lifespan.py``) runs it inside a Starlette/FastAPI app::

    app = FastAPI(lifespan=asyncsched.lifespan)                       # everything on
    app = FastAPI(lifespan=asyncsched.lifespan(tasks="tasks.yaml", agent="email-agent", worker=True))

Any number of processes may run the control plane against one Redis: each tick of a schedule is claimed by
one atomic script (one job, whoever claims it), and the recorder and the publisher are Redis consumer groups
(each lifecycle record is handled by one member; the recorder's writes are idempotent upserts). A process
that stops mid-batch leaves its records pending; another member takes them over after ``claim_idle``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from ._lifetime import Stacked
from ._protocols import StoppableWorker
from ._supervise import Supervised, cancel_until_done
from .config import Settings, get_settings

__all__ = [
    "ControlPlane",
    "cancel_and_wait",
    "migrated_database",
    "stop_worker",
    "warn_if_memory",
]

if TYPE_CHECKING:
    from .scheduler import TaskScheduler
    from .store import Database, ScheduledTask

log = logging.getLogger("asyncsched")


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` until it is done (the supervisor's :func:`~._supervise.cancel_until_done`: a loop
    that swallowed one cancellation is cancelled again rather than awaited forever); log how it ended."""
    await cancel_until_done(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("%s ended with %r", task.get_name(), task.exception())


async def stop_worker(worker: StoppableWorker, task: asyncio.Task[Any]) -> None:
    """Let ``worker`` (already asked to stop) drain its running jobs, then make sure its task ends.

    Running jobs get the worker's ``grace_period``. Once none is left the worker has a few seconds to
    return; if it does not (a helper task of its that swallowed a cancellation keeps it waiting), its
    task is cancelled until it ends, so shutdown never hangs.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(worker.grace_period) + 2.0
    while not task.done() and worker.running_jobs and loop.time() < deadline:
        await asyncio.wait({task}, timeout=0.1)
    await asyncio.wait({task}, timeout=3.0)
    if not task.done():
        log.warning("the worker did not stop by itself; cancelling it")
    await cancel_and_wait(task)


@asynccontextmanager
async def migrated_database(settings: Settings) -> AsyncIterator[Database]:
    """The configured ``Database``, reachable (else one ``BackendUnavailable`` line naming host and port) and
    migrated to this version's schema (any dialect: every entry point migrates on first use; concurrent
    starts are serialised by the store)."""
    from .store import Database

    async with Database(settings=settings, auto_migrate=False) as db:
        await db.check()
        await db.migrate()
        yield db


def warn_if_memory(settings: Settings, component: str) -> bool:
    """Warn loudly when a separate ``component`` process runs on ``memory://`` (no other process can reach
    it); returns whether it did."""
    if not settings.redis_url.lower().startswith("memory:"):
        return False
    log.warning(
        "%s: REDIS_URL is %s, a Redis that lives inside this process only: no producer, worker or API in "
        "another process can reach it. Set REDIS_URL (e.g. redis://localhost:6379/0), or run everything in "
        "one process with `asyncsched run`.",
        component,
        settings.redis_url,
    )
    return True


class ControlPlane(Stacked):
    """Scheduler (``scheduler``), history recorder (``history``) and ``task.*`` publisher (``events``) in the
    current process, as one async context manager.

    ``redis``: a URL or client (default ``settings.redis_url``). ``tasks``: ``tasks.yaml`` files registered
    on entry for ``agent`` (all are validated before anything is stored). The database is migrated on entry
    (any dialect; concurrent starts are serialised), so no entry point meets a missing table.
    ``component`` names this process in ``system.startup`` / ``system.shutdown``.
    """

    def __init__(
        self,
        redis: str | aioredis.Redis | None = None,
        *,
        settings: Settings | None = None,
        scheduler: bool = True,
        history: bool = True,
        events: bool = True,
        tasks: Sequence[str | os.PathLike[str]] = (),
        agent: str | None = None,
        component: str = "control-plane",
    ) -> None:
        self.settings = settings or get_settings()
        self._redis_arg = redis
        self.run_scheduler, self.history, self.events = scheduler, history, events
        self.tasks_files = [Path(p) for p in tasks]
        self.agent = agent or self.settings.agent
        self.component = component
        self.scheduler: TaskScheduler | None = None
        self.db: Database | None = None
        self.registered: list[ScheduledTask] = []
        self._runner: Supervised | None = None

    def describe(self) -> str:
        parts = [
            name
            for name, on in (
                ("scheduler", self.run_scheduler),
                ("history", self.history),
                ("events", self.events),
            )
            if on
        ]
        return ", ".join(parts) or "nothing"

    async def _start(self, stack: AsyncExitStack) -> None:
        from ._redis import check_redis, create_redis, is_client
        from .events import EventBus, open_publisher, system_events

        s = self.settings
        if is_client(self._redis_arg):
            redis = self._redis_arg
        else:
            redis = create_redis(self._redis_arg or s.redis_url)
            stack.push_async_callback(redis.aclose)
            await check_redis(redis, self._redis_arg or s.redis_url)
            from ._redis._durability import warn_if_redis_may_lose_data

            await warn_if_redis_may_lose_data(redis, s, self.component)  # (a given client: its owner did)
        if self.run_scheduler or self.history:
            self.db = await stack.enter_async_context(migrated_database(s))
        bus = await stack.enter_async_context(EventBus(redis, settings=s))
        if self.history:
            from .store import open_recorder

            assert self.db is not None  # opened above: history needs it
            await stack.enter_async_context(open_recorder(redis, db=self.db, settings=s))
            log.info("recording job history into %s", self.db.url.render_as_string(hide_password=True))
        if self.events:
            await stack.enter_async_context(open_publisher(redis, settings=s, bus=bus))
        await stack.enter_async_context(system_events(bus, self.component, s.agent))
        if self.run_scheduler:
            from .scheduler import TaskScheduler

            self.scheduler = await stack.enter_async_context(TaskScheduler(redis, settings=s, db=self.db))
            for path in self.tasks_files:
                registered = await self.scheduler.register_file(path, self.agent)
                self.registered.extend(registered)
                log.info("registered %d task(s) of %s for agent %s", len(registered), path, self.agent)
            # supervised: a crash of the firing loop is logged and the loop restarted with backoff
            self._runner = Supervised("asyncsched-control-scheduler", self.scheduler.run).start()
            stack.push_async_callback(self._stop_scheduler)
        where = self.db.url.render_as_string(hide_password=True) if self.db is not None else "-"
        log.info("control plane running in this process: %s (database %s)", self.describe(), where)

    async def _stop_scheduler(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.stop()

    async def wait(self) -> None:
        """Until cancellation (the scheduler loop is supervised: a crash is logged and it is restarted)."""
        task = None if self._runner is None else self._runner.task
        if task is None:
            await asyncio.Event().wait()
        else:
            await asyncio.shield(task)
