"""``asyncsched.sync.EventBus``: the spec's blocking event bus API over the async one, through the portal.

Publishing needs no connection of its own: every sync bus of the process with the same Redis URL, key
prefix and ``persist`` flag publishes through one shared async bus living on the portal loop, so a sync
task function may create ``EventBus()`` on every run for free. A sync bus that subscribes or listens gets
its own async bus (its own pub/sub reader) on the portal loop; release it with :meth:`EventBus.close` or
``with EventBus(...) as bus:``.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Iterator
from typing import Any

from .._lifetime import SyncClosing, blocking
from .._portal import portal
from ..config import Settings, get_settings
from ._bus import Callback, Subscription
from ._bus import EventBus as AsyncEventBus
from ._envelope import Event, validate_agent_name

__all__ = ["EventBus", "close_shared_publishers"]

_SharedKey = tuple[str, str, int, bool]
_shared: dict[_SharedKey, asyncio.Future[AsyncEventBus]] = {}


async def _shared_publisher(url: str, settings: Settings, persist: bool) -> AsyncEventBus:
    """The process's publishing bus for these settings (runs on the portal loop)."""
    key = (url, settings.key_prefix, settings.event_stream_maxlen, persist)
    fut = _shared.get(key)
    if fut is None:
        fut = asyncio.get_running_loop().create_future()
        _shared[key] = fut
        bus = AsyncEventBus(url, settings=settings, persist=persist)
        try:
            await bus.__aenter__()
        except BaseException as exc:
            del _shared[key]
            fut.set_exception(exc)
            fut.exception()  # retrieved: the caller gets it by raising below
            raise
        fut.set_result(bus)
    return await asyncio.shield(fut)


async def _close_shared() -> None:
    futures = list(_shared.values())
    _shared.clear()
    for fut in futures:
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            await fut.result().aclose()


def close_shared_publishers() -> None:
    """Close the shared publishing connections (at interpreter exit; tests call it between tests)."""
    if _shared:
        portal().call(_close_shared)


atexit.register(close_shared_publishers)  # registered after the portal's own atexit, so it runs first


class EventBus(SyncClosing):
    """The spec's ``EventBus`` for sync code (Flask views, sync task functions in worker threads).

    Same arguments as :class:`asyncsched.events.EventBus`, except that ``redis`` is a URL (a client
    belongs to one event loop). Methods block the calling thread; none may be called from the portal
    thread itself (i.e. from an async callback of this bus: use the async bus there).
    """

    def __init__(
        self,
        redis: str | None = None,
        *,
        settings: Settings | None = None,
        agent_name: str | None = None,
        persist: bool | None = None,
        **options: Any,
    ) -> None:
        if redis is not None and not isinstance(redis, str):
            raise TypeError("the sync EventBus takes a Redis URL (a client belongs to one event loop)")
        self.settings = settings or get_settings()
        self.url = redis or self.settings.redis_url
        self.agent_name = agent_name
        self.persist = self.settings.event_log if persist is None else persist
        self._options = options
        self._bus: AsyncEventBus | None = None
        self._lock = threading.Lock()
        if agent_name is not None and agent_name != "*":  # fail here, in the caller's thread
            validate_agent_name(agent_name)

    def _own(self) -> AsyncEventBus:
        with self._lock:
            if self._bus is None:
                bus = AsyncEventBus(
                    self.url,
                    settings=self.settings,
                    agent_name=self.agent_name,
                    persist=self.persist,
                    **self._options,
                )
                portal().call(bus.__aenter__)
                self._bus = bus
            return self._bus

    async def _publisher(self) -> AsyncEventBus:
        """This bus's own async bus once it subscribed or listens, else the process's shared publisher."""
        if self._bus is not None:
            return self._bus
        return await _shared_publisher(self.url, self.settings, self.persist)

    publish = blocking(
        _publisher,
        AsyncEventBus.publish,
        "Publish an event (to ``target_agent``, or broadcast) and return it; see the async ``publish``.",
    )

    def subscribe(
        self, agent_name: str, event_type: str, callback: Callback, durable: bool = False
    ) -> Subscription:
        """Subscribe ``callback`` (sync: run in a thread; async: run on the portal loop); returns once the
        subscription is live. ``subscription.unsubscribe()`` stops it."""
        bus = self._own()

        async def _subscribe() -> Subscription:
            return await bus.subscribe(agent_name, event_type, callback, durable=durable)

        return portal().call(_subscribe)

    def listen(self, timeout: float | None = 1.0) -> Event | None:
        """The next received event, or ``None`` after ``timeout`` seconds (0: do not wait; None: wait)."""
        return portal().call(self._own().listen, timeout)

    def events(self, idle_timeout: float | None = None) -> Iterator[Event]:
        """Iterate over received events (stops after ``idle_timeout`` seconds without one, if given)."""
        while True:
            event = self.listen(idle_timeout)
            if event is None:
                if idle_timeout is not None:
                    return
                continue
            yield event

    def close(self) -> None:
        """Stop receiving and release this bus's connection (publishing stays available)."""
        with self._lock:
            bus, self._bus = self._bus, None
        if bus is not None:
            portal().call(bus.aclose)
