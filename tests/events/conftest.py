"""Helpers of the event bus tests: collectors that wake the test when callbacks ran (no sleeps)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from asyncsched.config import Settings
from asyncsched.events import Event
from asyncsched.events._sync import close_shared_publishers


class Collector:
    """Records events from async callbacks (on the loop) and sync callbacks (in threads)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.threads: list[str] = []
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._lock = threading.Lock()

    async def async_cb(self, event: Event) -> None:
        self.threads.append(threading.current_thread().name)
        self.events.append(event)
        self._changed.set()

    def sync_cb(self, event: Event) -> None:
        with self._lock:
            self.threads.append(threading.current_thread().name)
            self.events.append(event)
        self._loop.call_soon_threadsafe(self._changed.set)

    async def wait(self, count: int, timeout: float = 15.0) -> list[Event]:
        """Wait until at least ``count`` events were recorded."""
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self._changed.clear()
                if len(self.events) >= count:
                    break
                await self._changed.wait()
        return self.events

    def types(self) -> list[str]:
        return [e.event_type for e in self.events]


@pytest.fixture
async def collector() -> Collector:
    return Collector()


@pytest.fixture
async def collector2() -> Collector:
    return Collector()


@pytest.fixture
def bus_settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url)


@pytest.fixture(autouse=True)
def _close_sync_publishers() -> Iterator[None]:
    yield
    close_shared_publishers()
