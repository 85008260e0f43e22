"""The live transport's receiving side: one pub/sub connection per bus, read by one supervised task.

The bus listens on the broadcast channel plus the channel of every agent it serves (its own
``agent_name`` and every agent subscribed through it); a monitor bus (``agent_name="*"``) listens on the
pattern of every agent's channel. Each message is decoded and validated on its own
(:meth:`Event.from_json`): one that is not a valid envelope is logged (rate-limited, see :mod:`._poison`)
and skipped; a lost connection is retried with backoff. Nothing a message holds ends the reader, and
:class:`asyncsched._supervise.Supervised` restarts it should it end all the same.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import _keys
from .._redis.cluster import pubsub_of
from .._supervise import Supervised
from ._envelope import Event, MalformedEvent
from ._poison import report_malformed
from ._subscription import MONITOR

__all__ = ["Listener"]

logger = logging.getLogger("asyncsched.events")


def _channel_name(channel: Any) -> str:
    return channel.decode(errors="replace") if isinstance(channel, bytes) else str(channel)


class Listener:
    """Pub/sub subscriptions and the reader of one bus.

    ``dispatch`` receives each decoded event; ``closed()`` says the bus closed (the reader ends);
    ``spawn`` runs a background step on the bus (a subscription to one more channel).
    """

    def __init__(
        self,
        *,
        prefix: str,
        agent_name: str | None,
        dispatch: Callable[[Event], Awaitable[None]],
        closed: Callable[[], bool],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        max_bytes: int | None = None,
    ) -> None:
        self.prefix = prefix
        self.max_bytes = max_bytes  # ASYNCSCHED_MAX_PAYLOAD_BYTES: larger messages are skipped, logged
        self.agent_name = agent_name
        self.broadcast_channel = _keys.broadcast_event_channel(prefix).encode()
        self.reader: Supervised | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the bus's, once started
        self._dispatch = dispatch
        self._closed = closed
        self._spawn = spawn
        self._pubsub: Any = None
        self._lock = asyncio.Lock()
        self._channels: dict[bytes, asyncio.Future[None]] = {}

    def ready_for(self, agent_name: str) -> list[asyncio.Future[None]]:
        """What a live subscription of ``agent_name`` waits for (subscribing that agent's channel if the
        reader runs already)."""
        ready = [self._channel_future(self.broadcast_channel)]
        if self.agent_name == MONITOR:  # the agent pattern covers every agent's channel
            ready.append(self._channel_future(_keys.agent_event_channel_pattern(self.prefix).encode()))
        else:
            channel = _keys.agent_event_channel(self.prefix, agent_name).encode()
            ready.append(self._channel_future(channel, subscribe=True))
        return ready

    def _channel_future(self, channel: bytes, subscribe: bool = False) -> asyncio.Future[None]:
        fut = self._channels.get(channel)
        if fut is None:
            assert self.loop is not None
            fut = self.loop.create_future()
            self._channels[channel] = fut
            if subscribe and self._pubsub is not None:
                self._spawn(self._pubsub.subscribe(channel))
        return fut

    async def start(self, redis: aioredis.Redis, agents: Iterable[str]) -> None:
        """Subscribe the channels of ``agents`` (and this bus's own) and start the reader (idempotent);
        return once Redis confirmed every subscription."""
        async with self._lock:
            if self.reader is not None or self._closed():
                return
            self._pubsub = await pubsub_of(redis)
            channels = [self.broadcast_channel]
            wanted = set(agents)
            if self.agent_name is not None and self.agent_name != MONITOR:
                wanted.add(self.agent_name)
            if self.agent_name != MONITOR:
                channels += [_keys.agent_event_channel(self.prefix, a).encode() for a in sorted(wanted)]
            waits = [self._channel_future(c) for c in channels]
            await self._pubsub.subscribe(*channels)
            if self.agent_name == MONITOR:
                pattern = _keys.agent_event_channel_pattern(self.prefix).encode()
                waits.append(self._channel_future(pattern))
                await self._pubsub.psubscribe(pattern)
            self.reader = Supervised("asyncsched-event-reader", self._read, done=self._closed)
            self.reader.start()
            async with asyncio.timeout(30):
                for fut in waits:
                    await asyncio.shield(fut)

    async def _read(self) -> None:
        """The reader: one pub/sub connection, each message decoded once and dispatched."""
        pubsub, channels, dispatch, closed = self._pubsub, self._channels, self._dispatch, self._closed
        from_json = functools.partial(Event.from_json, max_bytes=self.max_bytes)
        backoff = 0.1
        while not closed():
            try:
                response = await pubsub.parse_response(block=True)
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                logger.warning("event bus lost its pub/sub connection (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if response is None:
                continue
            backoff = 0.1
            try:
                kind = response[0]
                if kind == b"message":
                    data = response[2]
                elif kind == b"pmessage":
                    data = response[3]
                else:
                    if kind in (b"subscribe", b"psubscribe"):
                        fut = channels.get(response[1])
                        if fut is not None and not fut.done():
                            fut.set_result(None)
                    continue
                try:
                    event = from_json(data)
                except MalformedEvent as exc:
                    report_malformed("event", _channel_name(response[-2]), exc, data)
                    continue
                await dispatch(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug of ours: log it, keep reading
                logger.exception("event bus reader: cannot handle a message (%s); skipped", exc)

    async def stop_reader(self) -> None:
        """Stop the reader task (the bus is closing)."""
        if self.reader is not None:
            await self.reader.stop()

    async def aclose(self) -> None:
        """Fail what still waits for a subscription and close the pub/sub connection."""
        self.reader = None
        for fut in self._channels.values():
            if not fut.done():
                fut.cancel()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await pubsub.aclose()
