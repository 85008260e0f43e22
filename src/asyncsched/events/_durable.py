"""Durable delivery: one consumer per (bus, agent) reading the agent's consumer group on Redis Streams.

Streams: ``<ns>:events:stream:agent:<agent>`` (events targeted at the agent) and
``<ns>:events:stream:broadcast`` (broadcasts; every durable agent has its own group on it). The group of an
agent is named after the agent, so every process subscribing durably for the same agent shares the work:
each event is handled once per agent, by one of them, as long as the consumers live.

Protocol (at-least-once across crashes, once while consumers live):

1. The first durable subscription of an agent creates its groups at ``$`` (``MKSTREAM``); from then on
   publishers append every event for it, and the events wait in the stream while the agent is down
   (bounded by ``Settings.event_stream_maxlen``, oldest trimmed first).
2. A consumer announces it is alive with a key of its own (``<ns>:events:alive:<agent>:<consumer>``,
   expiring after ``claim_idle`` seconds, refreshed every ``claim_idle / 3``) before it reads anything,
   and deletes it when it stops.
3. On start the consumer re-reads its own pending entries (``XREADGROUP ... 0``): with a stable
   ``consumer`` name, a restarted process resumes where it crashed at once.
4. It reads a few entries at a time (:data:`READ_COUNT`) and handles them one by one, in order. An entry
   is acknowledged after all matching callbacks returned. A callback that raises is retried
   (``EventBus(durable_retries=...)``, with backoff) and, if it still fails, the entry goes to the
   dead-letter stream and is acknowledged; so does an entry that is not a valid event (see
   :mod:`._poison`). One bad event can neither loop forever nor stop the consumer.
5. Every ``claim_idle / 2`` seconds the consumer takes over the pending entries of consumers of its group
   whose alive key is gone (they crashed, or stopped) and that were idle for ``claim_idle``. Entries a
   live consumer has read but not yet handled are never taken from it, however long its callbacks take.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Coroutine
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .. import _keys, _metrics
from .._redis.cluster import is_cluster
from .._streams import REDIS_DOWN, Poison, StreamGroup, consume
from .._supervise import Supervised
from ..config import Settings
from ._envelope import Event, MalformedEvent
from ._poison import report_malformed
from ._subscription import Subscription

__all__ = ["READ_COUNT", "DurableAgents", "DurableConsumer", "DurableHost"]

logger = logging.getLogger("asyncsched.events")

READ_COUNT = 10
"""Entries read per stream at a time (handled one by one; never taken over while this consumer lives)."""

_CLAIM_BATCH = 100
_RETRY_DELAY = 0.1


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class DurableHost(Protocol):
    """What a durable consumer needs of the bus that runs it (:class:`._bus.EventBus` has it)."""

    @property
    def redis(self) -> aioredis.Redis:
        """The bus's Redis client (while the bus runs)."""

    @property
    def settings(self) -> Settings:
        """The bus's settings (``key_prefix``)."""

    @property
    def consumer(self) -> str | None:
        """The durable consumer name (``None``: unique per process and bus)."""

    @property
    def claim_idle(self) -> float:
        """Seconds after which the entries of a consumer that is gone are taken over."""

    @property
    def durable_retries(self) -> int:
        """How many times a failing callback is retried before its event is dead-lettered."""

    def durable_subscriptions(self, agent_name: str) -> list[Subscription]:
        """The active durable subscriptions of ``agent_name``, looked up for each event."""

    async def invoke(self, sub: Subscription, event: Event) -> Exception | None:
        """Run one callback to completion; return (never raise) its exception, ``None`` when it returned."""


class DurableAgents:
    """The durable consumers of one bus, one per agent subscribed durably (``consumers``), and those
    whose agent has no durable subscription any more and are still finishing an event."""

    def __init__(self, bus: DurableHost) -> None:
        self.bus = bus
        self.consumers: dict[str, DurableConsumer] = {}
        self._retired: list[DurableConsumer] = []

    def start(self, agent: str) -> None:
        """Start the consumer of ``agent`` unless it runs."""
        if agent in self.consumers:
            return
        bus = self.bus
        consumer = DurableConsumer(
            bus,
            agent,
            prefix=bus.settings.key_prefix,
            consumer=bus.consumer,
            claim_idle=bus.claim_idle,
            retries=bus.durable_retries,
        )
        self.consumers[agent] = consumer
        consumer.start()

    def retire(self, agent: str) -> Coroutine[Any, Any, None] | None:
        """Take the consumer of ``agent`` out of service; return what stops it (to be run in the
        background), or ``None`` when there was none. :meth:`stop` stops it too, should that never run."""
        consumer = self.consumers.pop(agent, None)
        if consumer is None:
            return None
        self._retired.append(consumer)
        return self._retire(consumer)

    async def _retire(self, consumer: DurableConsumer) -> None:
        try:
            await consumer.stop()
        finally:
            self._retired.remove(consumer)

    async def stop(self) -> None:
        """Stop every consumer (the bus is closing)."""
        for consumer in [*self.consumers.values(), *self._retired]:
            await consumer.stop()
        self.consumers.clear()


class DurableConsumer:
    """Reads one agent's consumer group and runs that agent's durable subscriptions on each event.

    ``bus`` runs the callbacks; ``prefix`` is the key prefix, ``consumer`` the consumer name (``None``:
    unique per process and bus), ``claim_idle`` and ``retries`` as ``EventBus(claim_idle=...,
    durable_retries=...)``.
    """

    def __init__(
        self,
        bus: DurableHost,
        agent: str,
        *,
        prefix: str,
        consumer: str | None,
        claim_idle: float,
        retries: int,
    ) -> None:
        self.bus = bus
        self.agent = agent
        self.prefix = prefix
        self.cluster = is_cluster(bus.redis)
        self.streams = [
            _keys.agent_event_stream(prefix, agent, cluster=self.cluster),
            _keys.broadcast_event_stream(prefix, cluster=self.cluster),
        ]
        self.name = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.alive_key = _keys.durable_consumer_alive(prefix, agent, self.name, cluster=self.cluster)
        self.claim_idle_ms = max(1, int(claim_idle * 1000))
        self.claim_every = claim_idle / 2
        self.renew_every = claim_idle / 3
        self.block_ms = max(1, int(min(self.claim_every, 2.0) * 1000))
        self.retries = retries
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self._alive: asyncio.Future[None] = loop.create_future()
        self._reader = Supervised(f"asyncsched-durable-{agent}", self._run, done=lambda: self._stopping)
        self._keeper = Supervised(
            f"asyncsched-durable-{agent}-alive", self._keep_alive, done=lambda: self._stopping
        )
        self._stopping = False
        self._busy = False
        self._group: StreamGroup | None = None
        self._need_groups, self._need_pending, self._next_claim = True, True, 0.0
        self.handled = 0
        """Entries handled (acknowledged) by this consumer."""

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping

    def start(self) -> None:
        self._keeper.start()
        self._reader.start()

    async def stop(self, grace: float = 30.0) -> None:
        """Stop after the event being handled (its callbacks get ``grace`` seconds, then are cancelled and
        the event stays pending, to be redelivered)."""
        self._stopping = True
        await self._reader.stop(grace=grace if self._busy else 0.0)
        await self._keeper.stop()
        if not self.ready.done():
            self.ready.cancel()
        if self._alive.done() and not self._alive.cancelled():
            try:  # gone: the entries it read and did not handle may be taken over by others at once
                await asyncio.wait_for(self.bus.redis.delete(self.alive_key), 2.0)
            except (*REDIS_DOWN, ResponseError, TimeoutError) as exc:
                logger.debug("durable consumer %s: alive key not deleted (%s)", self.name, exc)

    async def _keep_alive(self) -> None:
        """Refresh the alive key every ``renew_every`` seconds (see the module docs)."""
        redis = self.bus.redis
        while not self._stopping:
            try:
                await redis.set(self.alive_key, b"1", px=self.claim_idle_ms)
                if not self._alive.done():
                    self._alive.set_result(None)
            except REDIS_DOWN as exc:
                logger.debug("durable consumer %s: heartbeat failed (%s)", self.name, exc)
            await asyncio.sleep(self.renew_every)

    @property
    def group(self) -> StreamGroup:
        """This consumer's reader of the agent's group (on the bus's current client)."""
        redis = self.bus.redis
        if self._group is None or self._group.redis is not redis:
            cap = self.bus.settings.max_payload_bytes
            self._group = StreamGroup(
                redis, self.streams, self.agent, self.name, prefix=self.prefix, max_bytes=cap
            )
        return self._group

    async def _run(self) -> None:
        await asyncio.shield(self._alive)
        self._need_groups, self._need_pending, self._next_claim = True, True, 0.0

        async def regroup() -> None:  # the stream was deleted (e.g. FLUSHALL): start again
            self._need_groups = True

        what = f"durable consumer of agent {self.agent}"
        await consume(self._step, stopping=lambda: self._stopping, on_nogroup=regroup, what=what, log=logger)

    async def _step(self) -> None:
        """Groups (once), own pending entries (once), entries of gone consumers (every ``claim_idle / 2``),
        then a few new entries, handled one by one."""
        loop = asyncio.get_running_loop()
        if self._need_groups:
            await self.group.ensure()
            self._need_groups = False
            if not self.ready.done():
                self.ready.set_result(None)
        if self._need_pending:
            await self._own_pending()
            self._need_pending = False
        if loop.time() >= self._next_claim:
            await self._claim()
            self._next_claim = loop.time() + self.claim_every
        if self.stopping:
            return
        response = await self.group.read_new(READ_COUNT, block=self.block_ms / 1000)
        if response:
            await self._handle(response)

    async def _own_pending(self) -> None:
        """Entries delivered to this consumer name and never acknowledged (a crash of a previous run)."""
        after = self.group.cursors()  # handled entries are acknowledged: reading from 0 again moves on
        for _ in range(100_000):
            response = await self.group.read_pending(after, _CLAIM_BATCH)
            if not response or not any(item[1] for item in response):
                return
            await self._handle(response)
            if self._stopping:
                return

    async def _gone(self, consumers: list[Any]) -> list[str]:
        """The consumers (of the group) among ``consumers`` whose alive key is absent."""
        names = [_text(c) for c in consumers if _text(c) != self.name]
        if not names:
            return []
        keys = [_keys.durable_consumer_alive(self.prefix, self.agent, n, cluster=self.cluster) for n in names]
        async with self.bus.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                _ = pipe.exists(key)  # queued; replies come from execute()
            alive = await pipe.execute()
        return [name for name, present in zip(names, alive, strict=True) if not present]

    async def _claim(self) -> None:
        """Take over the pending entries of gone consumers idle for ``claim_idle``, and handle them."""
        redis = self.bus.redis
        for stream in self.streams:
            summary = await redis.xpending(stream, self.agent)
            if not summary or not summary.get("pending"):
                continue
            consumers = [c["name"] for c in summary.get("consumers") or []]
            for gone in await self._gone(consumers):
                for _ in range(1_000):
                    idle = self.claim_idle_ms / 1000
                    entries = await self.group.claim_from(stream, gone, idle, _CLAIM_BATCH)
                    if entries:
                        logger.info(
                            "agent %s: redelivering %d event(s) of stopped consumer %s",
                            self.agent,
                            len(entries),
                            gone,
                        )
                        await self._handle([[stream, entries]])
                    if self._stopping or len(entries) < _CLAIM_BATCH:
                        break

    async def _handle(self, response: Any) -> None:
        group = self.group
        self._busy = True
        try:
            for stream, entries in response:
                for entry_id, fields in entries:
                    # a trimmed entry comes back without fields: nothing to do but acknowledge
                    poison = await self._deliver(stream, entry_id, fields) if fields else None
                    await group.ack_one(stream, entry_id, poison)
                    self.handled += 1
                    if self._stopping:
                        return
        finally:
            self._busy = False

    async def _deliver(self, stream: Any, entry_id: Any, fields: dict[bytes, bytes]) -> Poison | None:
        """Deliver one entry's event to the agent's callbacks (retried); the entry as :class:`Poison` for
        the dead-letter stream when it is not an event or its callbacks failed every retry."""
        raw = fields.get(b"e")
        try:
            if raw is None:
                names = sorted(_text(k) for k in fields)[:10]
                raise MalformedEvent(f"entry has no 'e' field (fields: {names})")
            event = Event.from_json(raw, max_bytes=self.bus.settings.max_payload_bytes)
        except MalformedEvent as exc:
            where = f"{_text(stream)} (group {self.agent}, entry {_text(entry_id)})"
            data = raw if raw is not None else repr(fields)
            report_malformed("durable event", where, exc, data)
            return Poison(_text(stream), entry_id, f"malformed: {exc}", data)
        if _metrics.bus_lag is not None:  # a process serving metrics: delivery lag
            _metrics.observe_delivery("durable", event.created_at)
        subs = [s for s in self.bus.durable_subscriptions(self.agent) if s.matches(event.event_type)]
        failed: list[tuple[Subscription, BaseException]] = []
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(_RETRY_DELAY * 2 ** (attempt - 1), 5.0))
                subs = [s for s, _ in failed if s.active]
            if not subs:
                return None
            errors = await asyncio.gather(*(self.bus.invoke(s, event) for s in subs))
            failed = [(s, e) for s, e in zip(subs, errors, strict=True) if e is not None]
            if not failed:
                return None
        sub, error = failed[0]
        name = getattr(sub.callback, "__qualname__", repr(sub.callback))
        reason = f"callback {name} failed {self.retries + 1} time(s): {type(error).__name__}: {error}"
        logger.error("agent %s: event %s goes to the dead-letter stream: %s", self.agent, event.id, reason)
        return Poison(_text(stream), entry_id, reason, raw)
