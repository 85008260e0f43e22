"""The one private event-loop thread through which the sync facade calls the async core.

Sync code (a Flask view, a sync task function running in a worker thread) calls
``portal().call(some_async_fn, *args)``; the coroutine runs on a daemon thread's loop and the caller blocks
for its result. Async components used from the facade are created on, and stay bound to, that loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import ParamSpec, TypeVar

__all__ = ["Portal", "portal"]

P = ParamSpec("P")
T = TypeVar("T")


class Portal:
    """An event loop running forever in a daemon thread, started on first use."""

    def __init__(self, name: str = "asyncsched-portal") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The portal's loop, started if needed."""
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def _run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=_run, name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def call(self, func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``func(*args, **kwargs)`` on the portal loop and block until it returns or raises."""
        loop = self.loop
        if threading.current_thread() is self._thread:
            raise RuntimeError("the sync facade cannot be called from its own portal thread; await instead")

        async def _invoke() -> T:
            return await func(*args, **kwargs)

        future: Future[T] = asyncio.run_coroutine_threadsafe(_invoke(), loop)
        return future.result()

    def stop(self) -> None:
        """Stop the loop thread (at interpreter exit; a later call starts a fresh one)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None and thread.is_alive():
            # Cancel what still runs there (a bus reader, a pending wait) so nothing is destroyed pending.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()


async def _cancel_all() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=3)


_portal = Portal()
atexit.register(_portal.stop)


def portal() -> Portal:
    """The process-wide portal."""
    return _portal
