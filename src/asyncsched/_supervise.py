"""One supervisor for every long-lived background task: readers never die (DESIGN.md §9).

::

    reader = Supervised("event-reader", self._read).start()   # runs self._read() in a task
    ...
    await reader.stop()                                        # cancels it until it is done

The coroutine function is called again whenever its run ends while nobody asked it to stop: when it
raised (the exception is logged with its traceback) or returned (logged as an unexpected end). Restarts
wait an exponential backoff (``initial`` seconds, doubled per consecutive failure, capped at ``cap``); a
run that lasted ``reset_after`` seconds resets the backoff. A run may end for good by returning when
``done`` says so (e.g. a loop whose owner asked it to stop), or with :meth:`stop`.

``KeyboardInterrupt`` and ``SystemExit`` are never swallowed. A ``CancelledError`` that does not come from
:meth:`stop` (a library that cancelled something of its own and let it escape) counts as a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["Supervised", "cancel_until_done", "stop_all"]

log = logging.getLogger("asyncsched.supervise")


async def cancel_until_done(task: asyncio.Task[Any], *, grace: float = 0.0) -> None:
    """Let ``task`` finish for up to ``grace`` seconds, then cancel it until it is done.

    Cancellation is repeated because a client library may swallow one that lands at an unlucky moment
    (redis-py does during some connection steps); each one gets a second to act, so the task's own
    cleanup (closing a connection in a ``finally``) is not interrupted by the next."""
    if grace > 0 and not task.done():
        await asyncio.wait({task}, timeout=grace)
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)


async def stop_all(supervised: Iterable[Supervised], *, within: float = 6.0) -> int:
    """Stop several supervised tasks at once (each cancelled until done), waiting ``timeout`` seconds at
    most (``within`` seconds); how many did not stop in time (each is logged and left cancelling)."""
    stops = {asyncio.ensure_future(s.stop()): s for s in supervised}
    if not stops:
        return 0
    _, pending = await asyncio.wait(stops, timeout=within)
    for stop in pending:
        log.warning("%s did not stop within %.0fs", stops[stop].name, within)
        stop.cancel()
    return len(pending)


class Supervised:
    """A background task that is restarted, with capped exponential backoff, whenever it ends unasked.

    ``run``: the coroutine function (called with no arguments for each run). ``done``: called after a run
    returned normally; ``True`` ends supervision quietly (the default: a run that returns was told to
    stop by its owner only if ``done`` says so, otherwise it is restarted). ``restarts`` counts restarts;
    ``last_error`` holds the latest exception.
    """

    def __init__(
        self,
        name: str,
        run: Callable[[], Awaitable[Any]],
        *,
        done: Callable[[], bool] | None = None,
        initial: float = 0.1,
        cap: float = 30.0,
        reset_after: float = 60.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError("backoff: need 0 < initial <= cap")
        self.name = name
        self._run = run
        self._done = done or (lambda: False)
        self.initial = initial
        self.cap = cap
        self.reset_after = reset_after
        self.log = logger or log
        self.restarts = 0
        self.last_error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake: asyncio.Event | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The supervising task (``None`` before :meth:`start`)."""
        return self._task

    @property
    def running(self) -> bool:
        """Whether supervision is on (started, not stopped, not ended)."""
        return self._task is not None and not self._task.done()

    def start(self) -> Supervised:
        """Start the first run in a task of the running loop (idempotent while running)."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._supervise(), name=self.name)
        return self

    async def stop(self, grace: float = 0.0) -> None:
        """No more restarts; let the current run finish for ``grace`` seconds, then cancel it until done."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        task = self._task
        if task is not None:
            await cancel_until_done(task, grace=grace)

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.initial
        while not self._stopping:
            began = loop.time()
            error: BaseException | None = None
            try:
                await self._run()
            except (KeyboardInterrupt, SystemExit):
                raise
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stop_requested() or (task is not None and task.cancelling()):
                    raise
                error = asyncio.CancelledError("cancelled from inside the task")
            except BaseException as exc:
                error = exc
            if error is None and (self._stop_requested() or self._done()):
                return
            if loop.time() - began >= self.reset_after:
                backoff = self.initial
            self._restarting(error, backoff)
            await self._pause(backoff)
            backoff = min(backoff * 2, self.cap)

    def _stop_requested(self) -> bool:
        return self._stopping

    def _restarting(self, exc: BaseException | None, backoff: float) -> None:
        self.restarts += 1
        if exc is None:
            self.log.error(
                "%s ended unexpectedly; restarting in %.1fs (restart %d)", self.name, backoff, self.restarts
            )
            return
        self.last_error = exc
        self.log.error(
            "%s crashed (%s: %s); restarting in %.1fs (restart %d)",
            self.name,
            type(exc).__name__,
            exc,
            backoff,
            self.restarts,
            exc_info=exc,
        )

    async def _pause(self, seconds: float) -> None:
        wake = self._wake
        if wake is None:
            await asyncio.sleep(seconds)
            return
        try:
            async with asyncio.timeout(seconds):
                await wake.wait()
        except TimeoutError:
            pass

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Supervised {self.name} {state} restarts={self.restarts}>"
