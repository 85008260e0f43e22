"""One subscription: a callback for one agent and one event-type pattern (see :meth:`EventBus.subscribe`)."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from ._envelope import Event
from ._match import compile_pattern
from ._runner import Runner

__all__ = ["MONITOR", "Callback", "Subscription"]

Callback = Callable[[Event], Any]
"""A subscriber: ``def cb(event)`` (run in a thread) or ``async def cb(event)`` (run on the loop)."""

MONITOR = "*"
"""``EventBus(agent_name="*")`` observes every event of the deployment (targeted and broadcast)."""


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns a coroutine (``async def``, a partial of one, an async ``__call__``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


@dataclass(eq=False, repr=False, slots=True)
class Subscription:
    """One callback for one agent and one event-type pattern. Returned by :meth:`EventBus.subscribe`.

    ``await subscription`` (or :meth:`wait_ready`) returns once Redis confirmed the subscription, so an
    event published afterwards is received. :meth:`unsubscribe` stops deliveries.
    """

    _unsubscribe: Callable[[Subscription], None]
    agent_name: str
    event_type: str
    callback: Callback
    durable: bool
    is_async: bool = field(init=False)
    active: bool = field(default=True, init=False)
    _match: Callable[[str], bool] = field(init=False)
    _ready: list[asyncio.Future[None]] = field(default_factory=list, init=False)
    # async live subscriptions, once attached to a running bus
    _runner: Runner | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.is_async = is_async_callable(self.callback)
        self._match = compile_pattern(self.event_type)

    def matches(self, event_type: str) -> bool:
        """Whether this subscription's pattern matches ``event_type``."""
        return self._match(event_type)

    def unsubscribe(self) -> None:
        """Stop delivering events to this callback (idempotent; callbacks already running finish)."""
        self._unsubscribe(self)

    async def wait_ready(self, timeout: float | None = 30.0) -> Subscription:  # noqa: ASYNC109
        """Wait until the subscription is live in Redis (channel subscribed, or consumer group created)."""
        async with asyncio.timeout(timeout):
            while pending := [fut for fut in self._ready if not fut.done()]:
                for fut in pending:  # the list may grow meanwhile (a bus starting on first use)
                    await asyncio.shield(fut)
            for fut in self._ready:
                fut.result()  # a failed start or subscription raises here
        return self

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self.wait_ready().__await__()

    def __repr__(self) -> str:
        mode = "durable" if self.durable else "live"
        state = "" if self.active else " (inactive)"
        return f"<Subscription {self.agent_name} {self.event_type!r} {mode}{state}>"
