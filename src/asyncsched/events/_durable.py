"""Durable delivery: one consumer per (bus, agent) reading the agent's consumer group on Redis Streams.

Streams: ``<ns>:events:stream:agent:<agent>`` (events targeted at the agent) and
``<ns>:events:stream:broadcast`` (broadcasts; every durable agent has its own group on it). The group of an
agent is named after the agent, so every process subscribing durably for the same agent shares the work:
each event is handled once per agent, by one of them.

Lease protocol (at-least-once):

1. The first durable subscription of an agent creates its groups at ``$`` (``MKSTREAM``); from then on
   publishers append every event for it, and the events wait in the stream while the agent is down
   (bounded by ``Settings.event_stream_maxlen``, oldest trimmed first).
2. On start the consumer re-reads its own pending entries (``XREADGROUP ... 0``): with a stable
   ``consumer`` name, a restarted process resumes where it crashed at once.
3. An entry is acknowledged (``XACK``) after all matching callbacks returned (a callback that raised is
   logged, and the entry acknowledged all the same, so one bad event cannot loop forever).
4. While callbacks run, the consumer renews its lease on the entry every ``claim_idle / 3`` seconds
   (``XCLAIM ... JUSTID`` resets its idle time).
5. Every ``claim_idle / 2`` seconds the consumer takes over (``XAUTOCLAIM``) entries idle for longer than
   ``claim_idle``: those of a consumer that died mid-callback. They are delivered again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import _keys
from ._envelope import Event
from ._support import ensure_group, stop_task

if TYPE_CHECKING:
    from ._bus import EventBus

__all__ = ["DurableConsumer"]

logger = logging.getLogger("asyncsched.events")

_BATCH = 100


class DurableConsumer:
    """Reads one agent's consumer group and runs that agent's durable subscriptions on each event."""

    def __init__(self, bus: EventBus, agent: str) -> None:
        self.bus = bus
        self.agent = agent
        prefix = bus.settings.key_prefix
        self.streams = [_keys.agent_event_stream(prefix, agent), _keys.broadcast_event_stream(prefix)]
        self.name = bus.consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.claim_idle_ms = max(1, int(bus.claim_idle * 1000))
        self.claim_every = bus.claim_idle / 2
        self.renew_every = bus.claim_idle / 3
        self.block_ms = max(1, int(min(self.claim_every, 2.0) * 1000))
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"asyncsched-durable-{self.agent}"
        )

    async def stop(self, grace: float = 30.0) -> None:
        """Stop after the event being handled (its callbacks get ``grace`` seconds, then are cancelled and
        the event stays pending, to be redelivered)."""
        self._stopping = True
        task = self._task
        if task is None or task.done():
            return
        await stop_task(task, grace=grace if self._busy else 0.0)
        if not self.ready.done():
            self.ready.cancel()

    async def _run(self) -> None:
        redis = self.bus.redis
        loop = asyncio.get_running_loop()
        need_groups, need_pending = True, True
        next_claim = 0.0
        backoff = 0.1
        while not self._stopping:
            try:
                if need_groups:
                    await self._create_groups()
                    need_groups = False
                    if not self.ready.done():
                        self.ready.set_result(None)
                if need_pending:
                    await self._own_pending()
                    need_pending = False
                if loop.time() >= next_claim:
                    await self._claim()
                    next_claim = loop.time() + self.claim_every
                if self.stopping:
                    break
                response = await redis.xreadgroup(
                    self.agent, self.name, dict.fromkeys(self.streams, ">"), count=_BATCH, block=self.block_ms
                )
                if response:
                    await self._handle(response)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream was deleted (e.g. FLUSHALL): start again
                    need_groups = True
                    continue
                logger.error("durable consumer of agent %s: %s", self.agent, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                logger.warning("durable consumer of agent %s lost Redis (%s); retrying", self.agent, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _create_groups(self) -> None:
        for stream in self.streams:
            await ensure_group(self.bus.redis, stream, self.agent)

    async def _own_pending(self) -> None:
        """Entries delivered to this consumer name and never acknowledged (a crash of a previous run)."""
        for _ in range(10_000):
            response = await self.bus.redis.xreadgroup(
                self.agent, self.name, dict.fromkeys(self.streams, "0"), count=_BATCH
            )
            if not response or not any(item[1] for item in response):
                return
            await self._handle(response)
            if self._stopping:
                return

    async def _claim(self) -> None:
        """Take over entries idle longer than ``claim_idle`` (their consumer died) and handle them."""
        redis = self.bus.redis
        for stream in self.streams:
            start: Any = "0-0"
            for _ in range(1_000):
                reply = await redis.xautoclaim(
                    stream, self.agent, self.name, self.claim_idle_ms, start_id=start, count=_BATCH
                )
                start, entries = reply[0], reply[1]
                if entries:
                    logger.info("agent %s: redelivering %d unacknowledged event(s)", self.agent, len(entries))
                    await self._handle([[stream, entries]])
                if start in (b"0-0", "0-0") or self._stopping:
                    break

    async def _handle(self, response: Any) -> None:
        redis = self.bus.redis
        self._busy = True
        try:
            for stream, entries in response:
                for entry_id, fields in entries:
                    if fields:
                        await self._deliver(stream, entry_id, fields)
                    await redis.xack(stream, self.agent, entry_id)
                    if self._stopping:
                        return
        finally:
            self._busy = False

    async def _deliver(self, stream: Any, entry_id: Any, fields: dict[bytes, bytes]) -> None:
        try:
            event = Event.from_json(fields[b"e"])
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("agent %s: dropping malformed durable event %r (%s)", self.agent, entry_id, exc)
            return
        subs = [s for s in self.bus.durable_subscriptions(self.agent) if s.matches(event.event_type)]
        if not subs:
            return
        work = asyncio.gather(*(self.bus.invoke(s, event) for s in subs))
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=self.renew_every)
                if done:
                    return
                # Renew the lease: reset the entry's idle time so no other consumer takes it over.
                await self.bus.redis.xclaim(stream, self.agent, self.name, 0, [entry_id], justid=True)
        finally:
            if not work.done():
                work.cancel()
