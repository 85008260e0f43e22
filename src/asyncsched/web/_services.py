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
import importlib
import logging
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis

from ..config import Settings, get_settings
from ..exceptions import AsyncschedError
from ._live import LiveFeed

__all__ = ["ComponentUnavailable", "Services"]

log = logging.getLogger("asyncsched.web")

MONITOR = "*"
"""Agent name with which an ``EventBus`` observes every event of the deployment."""


class ComponentUnavailable(AsyncschedError):
    """A component the request needs is not installed or could not start (answered 503)."""


def _import(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ComponentUnavailable(f"{module}.{name} is not available: {exc}") from None


class Services:
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
        db: Any = None,
        queue: Any = None,
        scheduler: Any = None,
        bus: Any = None,
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
        self.process_metrics: Any = None

    @property
    def settings(self) -> Settings:
        """The settings in force (the process-wide ones unless given)."""
        return self._settings if self._settings is not None else get_settings()

    async def __aenter__(self) -> Services:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

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
        client: aioredis.Redis = await self._get("redis", self._build_redis)
        return client

    async def db(self) -> Any:
        """The ``Database``."""
        return await self._get("db", self._build_db)

    async def queue(self) -> Any:
        """The ``TaskQueue``."""
        return await self._get("queue", self._build_queue)

    async def scheduler(self) -> Any:
        """The ``TaskScheduler``."""
        return await self._get("scheduler", self._build_scheduler)

    async def bus(self) -> Any:
        """The ``EventBus``."""
        return await self._get("bus", self._build_bus)

    async def executions(self) -> Any:
        """An ``ExecutionRepository`` on :meth:`db`."""
        return await self._get("executions", self._build_executions)

    async def events(self) -> Any:
        """An ``EventRepository`` on :meth:`db`."""
        return await self._get("events", self._build_events)

    async def tasks(self) -> Any:
        """A ``TaskRepository`` on :meth:`db` (reads for lists; the scheduler writes)."""
        return await self._get("tasks", self._build_tasks)

    def live_if_started(self) -> LiveFeed | None:
        """The live feed if one runs (metrics must not start one)."""
        feed = self._given.get("live") or self._built.get("live")
        return feed if isinstance(feed, LiveFeed) else None

    async def live(self) -> LiveFeed:
        """The live feed, fed from :meth:`bus`."""
        feed: LiveFeed = await self._get("live", self._build_live)
        return feed

    async def _get(self, name: str, build: Callable[[AsyncExitStack], Coroutine[Any, Any, Any]]) -> Any:
        if name in self._given:
            return self._given[name]
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Built on another loop (an earlier test client): those clients cannot be used here.
            self._loop, self._stack = loop, AsyncExitStack()
            self._locks.clear()
            self._built.clear()
            self._tasks.clear()
        if name in self._built:
            return self._built[name]
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
            return self._built[name]

    # -- builders ----------------------------------------------------------------------------------

    async def _build_redis(self, stack: AsyncExitStack) -> aioredis.Redis:
        from .._redis import create_redis

        client = create_redis(self.settings.redis_url)
        stack.push_async_callback(client.aclose)
        return client

    async def _build_db(self, stack: AsyncExitStack) -> Any:
        database_cls = _import("asyncsched.store", "Database")
        # Every entry point migrates on first use (PostgreSQL included; concurrent starts are serialised by
        # the store), so a router mounted in an app whose database was never upgraded still works.
        return await stack.enter_async_context(database_cls(settings=self.settings, auto_migrate=True))

    async def _build_queue(self, stack: AsyncExitStack) -> Any:
        queue_cls = _import("asyncsched.queue", "TaskQueue")
        return await stack.enter_async_context(queue_cls(settings=self.settings))

    async def _build_scheduler(self, stack: AsyncExitStack) -> Any:
        scheduler_cls = _import("asyncsched.scheduler", "TaskScheduler")
        db = await self.db()
        queue = await self.queue()
        return await stack.enter_async_context(scheduler_cls(settings=self.settings, db=db, queue=queue))

    async def _build_bus(self, stack: AsyncExitStack) -> Any:
        bus_cls = _import("asyncsched.events", "EventBus")
        # agent "*": the monitor view, which receives every event of the deployment.
        return await stack.enter_async_context(bus_cls(settings=self.settings, agent_name=MONITOR))

    async def _build_executions(self, stack: AsyncExitStack) -> Any:
        return _import("asyncsched.store", "ExecutionRepository")(await self.db())

    async def _build_events(self, stack: AsyncExitStack) -> Any:
        return _import("asyncsched.store", "EventRepository")(await self.db())

    async def _build_tasks(self, stack: AsyncExitStack) -> Any:
        return _import("asyncsched.store", "TaskRepository")(await self.db())

    async def _build_live(self, stack: AsyncExitStack) -> LiveFeed:
        feed = LiveFeed()
        bus = await self.bus()
        await feed_from_bus(bus, feed, stack)
        return feed


async def pump(bus: Any, *sinks: Callable[[Any], Any]) -> None:
    """Hand every event ``bus`` receives to each of ``sinks`` (plain functions), until cancelled."""
    async for event in bus.events("*"):
        for sink in sinks:
            try:
                sink(event)
            except Exception:
                log.exception("live event handler failed")


async def feed_from_bus(bus: Any, feed: LiveFeed, stack: AsyncExitStack) -> None:
    """Feed ``feed`` with every event of ``bus`` for as long as ``stack`` is open."""
    task = asyncio.create_task(pump(bus, feed.push), name="asyncsched-web-live")

    async def _stop() -> None:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task

    stack.push_async_callback(_stop)
