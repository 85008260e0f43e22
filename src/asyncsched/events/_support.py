"""Small helpers shared by the bus, the durable consumers and the lifecycle publisher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .._supervise import cancel_until_done

__all__ = ["Background", "Startup", "stop_task"]


stop_task = cancel_until_done
"""Let a task finish for up to ``grace`` seconds, then cancel it until it is done (the supervisor's)."""


class Background:
    """Short background steps of one component (a subscription to one more channel, a consumer
    retiring): each logged if it fails, all stopped by :meth:`stop`."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in a task of its own on ``loop``."""
        task = loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._logger.error("%s background step failed", self._what, exc_info=task.exception())

    async def stop(self) -> None:
        """Cancel every step still running, until it is done."""
        for task in list(self.tasks):
            await stop_task(task)


class Startup:
    """Starting a component once, in a task of its own, on its first use (or ``async with``).

    ``run`` starts it (in a task called ``name``); when ``run`` fails, ``future`` carries the error, it is
    logged naming ``what``, and ``abort`` undoes what was opened; ``on_started`` runs once it succeeded.
    ``future`` is ``None`` until :meth:`begin`.
    """

    def __init__(
        self,
        run: Callable[[], Awaitable[None]],
        abort: Callable[[], Awaitable[None]],
        on_started: Callable[[], None],
        name: str,
        logger: logging.Logger,
        what: str,
    ) -> None:
        self._run, self._abort, self._on_started = run, abort, on_started
        self._name, self._logger, self._what = name, logger, what
        self.future: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    def begin(self) -> asyncio.Future[None]:
        """Start now on the running loop unless started already; the future is done once started."""
        if self.future is None:
            loop = asyncio.get_running_loop()
            self.future = starting = loop.create_future()
            starting.add_done_callback(self._log_failure)
            self.task = loop.create_task(self._start(starting), name=self._name)
        return self.future

    def pending(self) -> asyncio.Future[None] | None:
        """On first use without ``async with``: :meth:`begin` when a loop runs in this thread, and the
        start to wait for while it is not done (``None`` once done, or with no loop running here)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return None
        starting = self.begin()
        return None if starting.done() else starting

    def _log_failure(self, starting: asyncio.Future[None]) -> None:
        if not starting.cancelled() and (exc := starting.exception()) is not None:
            self._logger.error("the %s could not start: %s: %s", self._what, type(exc).__name__, exc)

    async def _start(self, starting: asyncio.Future[None]) -> None:
        try:
            await self._run()
        except BaseException as exc:
            if not starting.done():
                starting.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            await self._abort()
            if not isinstance(exc, Exception):
                raise
            return
        if not starting.done():
            self._on_started()
            starting.set_result(None)

    async def cancel(self, message: str) -> None:
        """Closed while starting: stop the start (nothing it opened may outlive the component) and fail
        whoever waits for it with ``RuntimeError(message)``."""
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            await cancel_until_done(task)
        if self.future is not None and not self.future.done():
            self.future.set_exception(RuntimeError(message))
            self.future.exception()
