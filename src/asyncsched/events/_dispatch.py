"""Live delivery inside one bus: each received event to the ``listen()``/``events()`` buffers and to the
matching subscriptions.

Matching subscriptions are looked up in a cache keyed by ``(target, event_type)``. Async callbacks go
through their subscription's :class:`~._runner.Runner` (a queue and elastic worker tasks on the bus's
loop, no task per event); sync callbacks run in a thread pool, at most ``max_concurrency`` at once. Beyond
the bounds the reader waits (back-pressure). A callback that raises is logged with the event id and
affects nothing else.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from .. import _metrics
from ._envelope import Event
from ._runner import Runner, log_callback_error
from ._stream import Sink
from ._subscription import Subscription

__all__ = ["Dispatcher"]

_ROUTE_CACHE_MAX = 4096
_COROUTINE_RETURNED = "the callback returned a coroutine: make it an `async def` to have it run"


@dataclass(eq=False, repr=False)
class Dispatcher:
    """Hands events to ``sinks`` and to the live subscriptions among ``subs`` (both lists are the bus's:
    it adds and removes, the dispatcher reads; :meth:`forget_routes` after every change of ``subs``)."""

    subs: list[Subscription]
    sinks: list[Sink]
    _: KW_ONLY
    max_concurrency: int
    buffer_size: int
    threads: int
    loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)  # the bus's, once started
    routes: dict[tuple[str | None, str], tuple[Subscription, ...]] = field(default_factory=dict, init=False)
    inflight: set[asyncio.Future[Any]] = field(default_factory=set, init=False)  # sync callbacks in threads
    # async callbacks: one runner per subscription
    runners: set[Runner] = field(default_factory=set, init=False)
    _slot: asyncio.Future[None] | None = field(default=None, init=False)
    _executor: ThreadPoolExecutor | None = field(default=None, init=False)

    def forget_routes(self) -> None:
        """Drop the route cache (a subscription came or went)."""
        self.routes.clear()

    def attach(self, sub: Subscription) -> None:
        """Give an async live subscription its runner (on the bus's loop)."""
        assert self.loop is not None
        sub._runner = Runner(sub, self.max_concurrency, self.loop)
        self.runners.add(sub._runner)

    async def dispatch(self, event: Event) -> None:
        """Hand one decoded event to the ``listen()``/``events()`` buffers and the matching callbacks."""
        if _metrics.bus_lag is not None:  # a process serving metrics: delivery lag
            _metrics.observe_delivery("live", event.created_at)
        for sink in self.sinks:
            sink.put(event)
        key = (event.target_agent, event.event_type)
        subs = self.routes.get(key)
        if subs is None:
            subs = self._route(key)
        inflight = self.inflight
        for sub in subs:
            runner = sub._runner
            if runner is not None:  # async: queued for the subscription's workers
                if len(runner.queue) >= self.buffer_size:
                    await runner.drained()
                runner.push(event)
            elif sub.active:  # sync: one thread-pool call, at most max_concurrency at once
                if len(inflight) >= self.max_concurrency:
                    await self._wait_slot()
                self._start_callback(sub, event)

    def _route(self, key: tuple[str | None, str]) -> tuple[Subscription, ...]:
        target, event_type = key
        subs = tuple(
            s
            for s in self.subs
            if not s.durable and (target is None or s.agent_name == target) and s.matches(event_type)
        )
        if len(self.routes) >= _ROUTE_CACHE_MAX:
            self.routes.clear()
        self.routes[key] = subs
        return subs

    def _start_callback(self, sub: Subscription, event: Event) -> None:
        loop = self.loop
        assert loop is not None
        fut = loop.run_in_executor(self._threads(), sub.callback, event)
        self.inflight.add(fut)
        fut.add_done_callback(functools.partial(self._callback_done, sub, event))

    def _callback_done(self, sub: Subscription, event: Event, fut: asyncio.Future[Any]) -> None:
        self.inflight.discard(fut)
        slot = self._slot
        if slot is not None and not slot.done():
            slot.set_result(None)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log_callback_error(sub, event, exc)
        elif inspect.iscoroutine(result := fut.result()):  # e.g. a lambda returning a coroutine
            result.close()
            log_callback_error(sub, event, TypeError(_COROUTINE_RETURNED))

    async def _wait_slot(self) -> None:
        while len(self.inflight) >= self.max_concurrency:
            assert self.loop is not None
            self._slot = self.loop.create_future()
            await self._slot
        self._slot = None

    def _threads(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix="asyncsched-events"
            )
        return self._executor

    async def invoke(self, sub: Subscription, event: Event) -> Exception | None:
        """Run one callback to completion (thread for sync ones); log and return, never raise, its
        exception (``None`` when it returned)."""
        try:
            if sub.is_async:
                await sub.callback(event)
            else:
                assert self.loop is not None
                result = await self.loop.run_in_executor(self._threads(), sub.callback, event)
                if inspect.iscoroutine(result):
                    result.close()
                    raise TypeError(_COROUTINE_RETURNED)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_callback_error(sub, event, exc)
            return exc
        return None

    async def drain(self, grace: float) -> None:
        """Let running callbacks finish for up to ``grace`` seconds (queued async events are still
        delivered), then cancel the async ones."""
        runners = list(self.runners)
        for runner in runners:
            runner.close_when_drained()
        running = [*self.inflight, *(t for r in runners for t in r.tasks)]
        if running:
            await asyncio.wait(running, timeout=grace)
            for fut in running:
                fut.cancel()

    def shutdown(self) -> None:
        """Release the thread pool (threads still running a callback finish on their own)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
