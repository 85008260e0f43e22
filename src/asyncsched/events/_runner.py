"""Delivery of live events to one ``async def`` subscription: a queue drained by elastic worker tasks.

Creating a task per event would cost an allocation and a loop iteration per event, even for a callback
that never suspends. Instead each async subscription has a queue and up to ``limit`` worker tasks:

* a worker drains the queue, awaiting the callback for each event; a callback that does not suspend
  runs back to back with the next one, so a burst of events costs one wake-up, not one task each;
* when every worker is suspended inside a callback (waiting on I/O) and an event arrives, another worker
  starts, up to ``limit``: slow callbacks still run concurrently;
* the last worker stays, idle, waiting for the next event; the others end when the queue is empty.

Callbacks of one subscription therefore run in arrival order as long as they do not suspend, and
concurrently (finishing in any order) when they do.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, Protocol

from ._envelope import Event

__all__ = ["Runner", "Subscriber", "log_callback_error"]

logger = logging.getLogger("asyncsched.events")


class Subscriber(Protocol):
    """What delivering to a subscription needs of it (:class:`._subscription.Subscription` has it)."""

    @property
    def active(self) -> bool:
        """False once unsubscribed: nothing more is delivered."""

    @property
    def agent_name(self) -> str:
        """The agent the subscription serves (named in logs)."""

    @property
    def callback(self) -> Callable[[Event], Any]:
        """What is called with each event."""


class Runner:
    """The queue and workers of one async subscription (see the module docs)."""

    __slots__ = (
        "_drained",
        "_idle",
        "_loop",
        "_tasks",
        "busy",
        "closed",
        "closing",
        "limit",
        "queue",
        "sub",
        "workers",
    )

    def __init__(self, sub: Subscriber, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self.sub = sub
        self.limit = limit
        self._loop = loop
        self.queue: collections.deque[Event] = collections.deque()
        self.workers = 0
        self.busy = 0  # workers inside a callback; while the reader runs, they are suspended there
        self.closed = False
        self.closing = False
        self._idle: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def push(self, event: Event) -> None:
        """Queue ``event`` and make sure a worker will take it."""
        self.queue.append(event)
        idle = self._idle
        if idle is not None:
            self._idle = None
            if not idle.done():
                idle.set_result(None)
        elif self.workers == self.busy and self.workers < self.limit:
            self._spawn()

    def _spawn(self) -> None:
        self.workers += 1
        task = self._loop.create_task(self._work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drained(self) -> None:
        """Wait until the queue is empty (back-pressure on the reader)."""
        while self.queue and not self.closed:
            if self._drained is None or self._drained.done():
                self._drained = self._loop.create_future()
            await self._drained

    async def _work(self) -> None:
        queue = self.queue
        sub = self.sub
        try:
            while not self.closed:
                while queue:
                    event = queue.popleft()
                    if not sub.active:
                        continue
                    self.busy += 1
                    try:
                        await sub.callback(event)
                    except Exception as exc:
                        log_callback_error(sub, event, exc)
                    finally:
                        self.busy -= 1
                drained = self._drained
                if drained is not None and not drained.done():
                    drained.set_result(None)
                if self.workers > 1 or self.closing or self.closed:
                    return
                self._idle = idle = self._loop.create_future()
                await idle
        finally:
            self.workers -= 1

    def close(self) -> None:
        """Stop delivering (unsubscribed): queued events are dropped, workers end after their callback."""
        self.closed = True
        self._wake()

    def close_when_drained(self) -> None:
        """Deliver what is queued, then let the workers end (the bus is closing)."""
        self.closing = True
        if self.queue and self.workers == self.busy and self.workers < self.limit:
            self._spawn()
        self._wake()

    def _wake(self) -> None:
        for fut in (self._idle, self._drained):
            if fut is not None and not fut.done():
                fut.set_result(None)
        self._idle = None

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """The running worker tasks."""
        return self._tasks


def log_callback_error(sub: Subscriber, event: Event, exc: BaseException) -> None:
    """Log a failed callback with the event id (the one place this message is written)."""
    name = getattr(sub.callback, "__qualname__", repr(sub.callback))
    logger.error(
        "event callback %s of agent %s failed on event %s (%s from %s): %s: %s",
        name,
        sub.agent_name,
        event.id,
        event.event_type,
        event.source_agent,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )
