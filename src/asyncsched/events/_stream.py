"""Buffers of received events: the one behind ``listen()`` and one per ``events()`` stream."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

from ._envelope import Event

__all__ = ["EventStream", "Sink"]

logger = logging.getLogger("asyncsched.events")


class Sink:
    """A bounded buffer of received events for ``listen()`` or one ``events()`` iterator."""

    __slots__ = ("buffer", "closed", "dropped", "match", "waiters", "warn")

    def __init__(self, size: int, match: Callable[[str], bool] | None = None, warn: bool = True) -> None:
        self.buffer: collections.deque[Event] = collections.deque(maxlen=size)
        self.waiters: list[asyncio.Future[None]] = []
        self.match = match
        self.dropped = 0
        self.closed = False
        self.warn = warn

    def put(self, event: Event) -> None:
        if self.match is not None and not self.match(event.event_type):
            return
        buffer = self.buffer
        if len(buffer) == buffer.maxlen:
            self.dropped += 1
            if self.warn and self.dropped == 1:
                logger.warning(
                    "event buffer full: %d received events were not read with listen()/events(); dropping "
                    "the oldest from now on (read them, or raise buffer_size)",
                    buffer.maxlen,
                )
        buffer.append(event)
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
                break

    async def get(self, timeout: float | None) -> Event | None:  # noqa: ASYNC109
        if self.buffer:
            return self.buffer.popleft()
        if timeout is not None and timeout <= 0:
            return None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.buffer:
            if self.closed:
                return None
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            waiter: asyncio.Future[None] = loop.create_future()
            self.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            finally:
                self.waiters.remove(waiter)
        return self.buffer.popleft()

    def close(self) -> None:
        self.closed = True
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)


class EventStream:
    """Async iterator over the events a bus receives (see :meth:`EventBus.events`).

    What it needs of the bus is passed in: ``closed()`` (the bus was closed: the stream ends),
    ``start_reading()`` (start the bus and its reader, for a bus used without ``async with``) and
    ``detach(sink)`` (stop buffering into this stream's sink).
    """

    def __init__(
        self,
        sink: Sink,
        idle_timeout: float | None,
        *,
        closed: Callable[[], bool],
        start_reading: Callable[[], Awaitable[None]],
        detach: Callable[[Sink], None],
    ) -> None:
        self._sink: Sink | None = sink
        self._idle_timeout = idle_timeout
        self._closed = closed
        self._start_reading = start_reading
        self._detach_sink = detach
        self._reading = False  # the bus's reader runs (until the bus closes, which ends the stream)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while self._sink is not None and not self._closed():
            if not self._reading:
                await self._start_reading()  # a bus used without `async with` starts here
                self._reading = True
            event = await self._sink.get(self._idle_timeout)
            if event is not None:
                return event
            if self._idle_timeout is not None:
                break
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop buffering events for this stream."""
        self._detach()

    def _detach(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            self._detach_sink(sink)

    def __del__(self) -> None:
        self._detach()
