"""What the router talks to: the scheduler, queue, bus and repositories, given or built on first use.

``asyncsched run`` (:class:`asyncsched.runtime.Runtime`) hands its already-running components to
``Services(...)``. A router mounted in someone else's app gets a ``Services`` that builds each component
from the settings on the first request that needs it, so no lifespan hook is required; its components are
closed by ``await services.aclose()`` (or ``async with services``), or at process exit.

Components are bound to the event loop they were built on; a request on another loop (a new test
client) gets fresh ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, TypeVar, cast

import redis.asyncio as aioredis

from .._lifetime import Closing
from .._protocols import EventSource
from .._supervise import Supervised
from ..config import Settings, get_settings
from ..exceptions import AsyncschedError, ComponentUnavailable
from ._live import LiveFeed

if TYPE_CHECKING:
    from .._metrics import ProcessMetrics
    from ..events import Event, EventBus
    from ..queue import TaskQueue
    from ..scheduler import TaskScheduler
    from ..store import Database, EventRepository, ExecutionRepository, TaskRepository

__all__ = ["ComponentUnavailable", "Services"]

log = logging.getLogger("asyncsched.web")

T = TypeVar("T")

MONITOR = "*"
"""Agent name with which an ``EventBus`` observes every event of the deployment."""


@contextlib.contextmanager
def _available(module: str) -> Iterator[None]:
    """Around a lazy import of an engine: one that cannot be imported is :class:`ComponentUnavailable`
    (the engines are imported on first use, not with the router: start-up cost, optional extras)."""
    try:
        yield
    except ImportError as exc:
        raise ComponentUnavailable(f"{module} is not available: {exc}") from None


class Services(Closing):
    """The components behind the API. Pass running ones; the rest are built lazily from ``settings``.

    ``db``: an entered ``asyncsched.store.Database``; ``queue``: an entered ``TaskQueue``;
    ``scheduler``: an entered ``TaskScheduler``; ``bus``: an entered ``EventBus``; ``live``: a
    :class:`LiveFeed` already fed by the owner (otherwise one is fed from ``bus``).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis: aioredis.Redis | None = None,
        db: Database | None = None,
        queue: TaskQueue | None = None,
        scheduler: TaskScheduler | None = None,
        bus: EventBus | None = None,
        live: LiveFeed | None = None,
    ) -> None:
        self._settings = settings
        given = {"redis": redis, "db": db, "queue": queue, "scheduler": scheduler, "bus": bus, "live": live}
        self._given: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        self._built: dict[str, Any] = {}
        self._stack: AsyncExitStack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # the job histograms of a worker in this process (asyncsched run), served with /metrics
        self.process_metrics: ProcessMetrics | None = None

    @property
    def settings(self) -> Settings:
        """The settings in force (the process-wide ones unless given)."""
        return self._settings if self._settings is not None else get_settings()

    async def aclose(self) -> None:
        """Close every component this object built (given ones belong to their owner)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        stack, self._stack = self._stack, None
        self._built.clear()
        if stack is not None:
            await stack.aclose()

    # -- component access --------------------------------------------------------------------------

    async def redis(self) -> aioredis.Redis:
        """A Redis client (health checks, metrics)."""
        return await self._get("redis", self._build_redis)

    async def db(self) -> Database:
        """The ``Database``."""
        return await self._get("db", self._build_db)

    async def queue(self) -> TaskQueue:
        """The ``TaskQueue``."""
        return await self._get("queue", self._build_queue)

    async def scheduler(self) -> TaskScheduler:
        """The ``TaskScheduler``."""
        return await self._get("scheduler", self._build_scheduler)

    async def bus(self) -> EventBus:
        """The ``EventBus``."""
        return await self._get("bus", self._build_bus)

    async def executions(self) -> ExecutionRepository:
        """An ``ExecutionRepository`` on :meth:`db` (a repository holds nothing but the database)."""
        db = await self.db()
        from ..store import ExecutionRepository

        return ExecutionRepository(db)

    async def events(self) -> EventRepository:
        """An ``EventRepository`` on :meth:`db`."""
        db = await self.db()
        from ..store import EventRepository

        return EventRepository(db)

    async def tasks(self) -> TaskRepository:
        """A ``TaskRepository`` on :meth:`db` (reads for lists; the scheduler writes)."""
        db = await self.db()
        from ..store import TaskRepository

        return TaskRepository(db)

    def live_if_started(self) -> LiveFeed | None:
        """The live feed if one runs (metrics must not start one)."""
        feed = self._given.get("live") or self._built.get("live")
        return feed if isinstance(feed, LiveFeed) else None

    async def live(self) -> LiveFeed:
        """The live feed, fed from :meth:`bus`."""
        return await self._get("live", self._build_live)

    async def _get(self, name: str, build: Callable[[AsyncExitStack], Coroutine[Any, Any, T]]) -> T:
        if name in self._given:
            return cast("T", self._given[name])
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Built on another loop (an earlier test client): those clients cannot be used here.
            self._loop, self._stack = loop, AsyncExitStack()
            self._locks.clear()
            self._built.clear()
            self._tasks.clear()
        if name in self._built:
            return cast("T", self._built[name])
        assert self._stack is not None
        # One lock per component: a builder awaits the components it needs (scheduler -> db, queue).
        async with self._locks.setdefault(name, asyncio.Lock()):
            if name not in self._built:
                try:
                    self._built[name] = await build(self._stack)
                except ComponentUnavailable:
                    raise
                except AsyncschedError:
                    raise
                except Exception as exc:
                    log.exception("cannot start %s for the API", name)
                    raise ComponentUnavailable(f"{name} could not start: {type(exc).__name__}") from exc
            return cast("T", self._built[name])

    # -- builders ----------------------------------------------------------------------------------

    async def _build_redis(self, stack: AsyncExitStack) -> aioredis.Redis:
        from .._redis import create_redis

        client = create_redis(self.settings.redis_url)
        stack.push_async_callback(client.aclose)
        return client

    async def _build_db(self, stack: AsyncExitStack) -> Database:
        with _available("asyncsched.store"):
            from ..store import Database
        # Every entry point migrates on first use (PostgreSQL included; concurrent starts are serialised by
        # the store), so a router mounted in an app whose database was never upgraded still works.
        return await stack.enter_async_context(Database(settings=self.settings, auto_migrate=True))

    async def _build_queue(self, stack: AsyncExitStack) -> TaskQueue:
        with _available("asyncsched.queue"):
            from ..queue import TaskQueue
        return await stack.enter_async_context(TaskQueue(settings=self.settings))

    async def _build_scheduler(self, stack: AsyncExitStack) -> TaskScheduler:
        with _available("asyncsched.scheduler"):
            from ..scheduler import TaskScheduler
        db = await self.db()
        queue = await self.queue()
        return await stack.enter_async_context(TaskScheduler(settings=self.settings, db=db, queue=queue))

    async def _build_bus(self, stack: AsyncExitStack) -> EventBus:
        with _available("asyncsched.events"):
            from ..events import EventBus
        # agent "*": the monitor view, which receives every event of the deployment.
        return await stack.enter_async_context(EventBus(settings=self.settings, agent_name=MONITOR))

    async def _build_live(self, stack: AsyncExitStack) -> LiveFeed:
        feed = LiveFeed()
        bus = await self.bus()
        await feed_from_bus(bus, feed, stack)
        return feed


async def pump(bus: EventSource, *sinks: Callable[[Event], object]) -> None:
    """Hand every event ``bus`` receives to each of ``sinks`` (plain functions), until cancelled."""
    async for event in bus.events("*"):
        for sink in sinks:
            try:
                sink(event)
            except Exception:
                log.exception("live event handler failed")


async def feed_from_bus(bus: EventSource, feed: LiveFeed, stack: AsyncExitStack) -> None:
    """Feed ``feed`` with every event of ``bus`` for as long as ``stack`` is open (supervised: a pump that
    crashes or ends is logged and restarted with backoff)."""
    runner = Supervised("asyncsched-web-live", lambda: pump(bus, feed.push), done=lambda: not bus.started)
    runner.start()
    stack.push_async_callback(runner.stop)
