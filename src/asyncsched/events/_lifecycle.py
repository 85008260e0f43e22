"""Lifecycle events: ``task.*`` from the job lifecycle feed, ``system.startup`` / ``system.shutdown``.

The queue and the worker never publish on the bus themselves: they append a
:class:`~asyncsched._lifecycle.LifecycleRecord` to the lifecycle stream in the same step as each state
change. :class:`LifecyclePublisher` reads that stream in consumer group ``events`` and publishes one
broadcast event per record (pipelined per batch), then acknowledges the batch. A crash between the two
republishes the batch (at-least-once); a record left by a dead publisher is taken over after
``claim_idle`` seconds.

Event payload (times as ISO 8601 UTC text, ``None`` when unknown)::

    {"job_id", "queue", "agent_name", "task_name", "function", "scheduled_task_id", "status",
     "attempt", "worker", "enqueued_at", "started_at", "ended_at", "duration", "error", "will_retry"}

``status`` is the spec's vocabulary (queued, running, success, failed, cancelled, skipped: a scheduled tick
not run under ``overlap: skip``); a failed attempt that will be retried is ``task.failed`` with
``will_retry: true``. The source agent is the job's agent, or
``asyncsched`` for jobs without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import _keys
from .._lifecycle import Lifecycle, LifecycleRecord
from .._redis.cluster import is_cluster
from .._streams import Poison, StreamGroup, consume
from .._supervise import Supervised
from ..config import Settings, get_settings
from ..exceptions import ConfigurationError
from ..rq.slots import untagged
from ._bus import EventBus
from ._envelope import Event, validate_agent_name
from ._poison import report_malformed
from ._support import stop_task

__all__ = ["GROUP", "LifecyclePublisher", "lifecycle_event", "publish_system_event", "system_events"]

logger = logging.getLogger("asyncsched.events")

GROUP = "events"
"""Consumer group of the lifecycle stream read by the publisher."""

DEFAULT_SOURCE = "asyncsched"

_STATUS: dict[Lifecycle, str] = {
    Lifecycle.QUEUED: "queued",
    Lifecycle.STARTED: "running",
    Lifecycle.SUCCESS: "success",
    Lifecycle.FAILED: "failed",
    Lifecycle.RETRY: "failed",
    Lifecycle.CANCELLED: "cancelled",
    Lifecycle.SKIPPED: "skipped",
}


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def event_source(agent: str | None) -> str:
    """The ``source_agent`` of an event about a job of ``agent``: the agent when it is a valid name, else
    ``asyncsched``."""
    if agent is None:
        return DEFAULT_SOURCE
    try:
        return validate_agent_name(agent)
    except ConfigurationError:
        return DEFAULT_SOURCE


def lifecycle_event(record: LifecycleRecord, untag: bool = False) -> Event | None:
    """The ``task.*`` event of a lifecycle record, or ``None`` for kinds that publish nothing (``untag``:
    a Redis Cluster's record, whose queue ``{q}`` and worker ``{q}<w>`` are named as users know them)."""
    event_type = record.event_type
    if untag:
        record = replace(record, queue=untagged(record.queue) or "", worker=untagged(record.worker))
    if event_type is None:
        return None
    duration = None
    if record.started_at is not None and record.ended_at is not None:
        duration = round(record.ended_at - record.started_at, 6)
    payload: dict[str, Any] = {
        "job_id": record.job_id,
        "queue": record.queue,
        "agent_name": record.agent_name,
        "task_name": record.task_name,
        "function": record.function,
        "scheduled_task_id": record.scheduled_task_id,
        "status": _STATUS[record.kind],
        "attempt": record.attempt,
        "worker": record.worker,
        "enqueued_at": _iso(record.enqueued_at),
        "started_at": _iso(record.started_at),
        "ended_at": _iso(record.ended_at),
        "duration": duration,
        "error": record.error,
        "will_retry": record.kind is Lifecycle.RETRY,
    }
    return Event.create(event_type, event_source(record.agent_name), payload)


async def publish_system_event(
    bus: EventBus,
    kind: Literal["startup", "shutdown"],
    component: str,
    agent: str | None = None,
    **details: Any,
) -> Event:
    """Publish ``system.startup`` or ``system.shutdown`` (broadcast) for ``component`` (``worker``,
    ``scheduler``, ``runtime``...). Payload: component, agent, host, pid, and ``details``."""
    if kind not in ("startup", "shutdown"):
        raise ConfigurationError(f"system event kind must be 'startup' or 'shutdown', got {kind!r}")
    payload = {"component": component, "agent": agent, "host": socket.gethostname(), "pid": os.getpid()}
    payload.update(details)
    return await bus.publish(f"system.{kind}", event_source(agent), payload)


@contextlib.asynccontextmanager
async def system_events(
    bus: EventBus, component: str, agent: str | None = None, **details: Any
) -> AsyncIterator[None]:
    """Publish ``system.startup`` on entry and ``system.shutdown`` on exit (also when the body raises),
    e.g. ``await stack.enter_async_context(system_events(bus, "worker", agent))`` in a composition root.
    A failure to publish the shutdown event (Redis already gone) is logged, not raised."""
    await publish_system_event(bus, "startup", component, agent, **details)
    try:
        yield
    finally:
        try:
            await publish_system_event(bus, "shutdown", component, agent, **details)
        except (RedisConnectionError, RedisTimeoutError, OSError, RuntimeError) as exc:
            logger.warning("could not publish system.shutdown for %s: %s", component, exc)


class LifecyclePublisher:
    """Consumes the lifecycle stream (group ``events``) and publishes ``task.*`` events on the bus.

    ``async with LifecyclePublisher(settings=s):`` runs it in the background until exit. ``bus``: publish
    through this (entered) bus instead of an own one. The group is created at the stream's end, so the
    first start does not replay old history.
    """

    def __init__(
        self,
        redis: str | aioredis.Redis | None = None,
        *,
        settings: Settings | None = None,
        bus: EventBus | None = None,
        batch_size: int = 500,
        claim_idle: float = 60.0,
        consumer: str | None = None,
        queue: str | None = None,
    ) -> None:
        self.queue = queue  # on a cluster, the queue (its name in Redis) whose stream this one reads
        self.settings = settings or (bus.settings if bus is not None else get_settings())
        self._redis_arg = redis
        self._bus = bus
        self._own_bus: EventBus | None = None
        self.batch_size = batch_size
        self.claim_idle_ms = max(1, int(claim_idle * 1000))
        self.claim_every = claim_idle / 2
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.stream = _keys.lifecycle_stream(self.settings.key_prefix)
        self.published = 0
        """Events published so far (for tests and metrics)."""
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False
        self._group: StreamGroup | None = None
        self._cluster = False  # a Redis Cluster's records: names untagged (set with the group)
        self._need_pending = True
        self._next_claim = 0.0

    @property
    def bus(self) -> EventBus:
        bus = self._bus or self._own_bus
        if bus is None:
            raise RuntimeError(
                "the LifecyclePublisher is not started: use `async with LifecyclePublisher():`"
            )
        return bus

    async def __aenter__(self) -> LifecyclePublisher:
        if self._bus is None:
            self._own_bus = EventBus(self._redis_arg, settings=self.settings)
            await self._own_bus.__aenter__()
        try:
            await self._create_group()
        except BaseException:
            await self._close_bus()
            raise
        # Supervised: a loop that ends unasked is restarted with backoff and logged (readers never die).
        supervised = Supervised("asyncsched-lifecycle-events", self._run, done=lambda: self._stopping)
        self._task = supervised.start().task
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping = True
        task = self._task
        if task is not None:
            await stop_task(task, grace=30.0 if self._busy else 0.0)
        await self._close_bus()

    async def _close_bus(self) -> None:
        if self._own_bus is not None:
            await self._own_bus.aclose()
            self._own_bus = None

    async def _create_group(self, *, lost: bool = False) -> None:
        # A group that vanished while we ran means Redis lost its data (restart without persistence,
        # FLUSHALL): everything now in the stream was written since then and is unpublished, so read it
        # from the start; only the very first creation starts at the end (no replay of old history).
        await self.group.ensure(lost=lost)

    @property
    def group(self) -> StreamGroup:
        """This publisher's reader of the lifecycle stream (group ``events``), once started."""
        if self._group is None or self._group.redis is not self.bus.redis:
            # on a cluster: the scheduler's lifecycle stream, or the queue's (one publisher each: _lanes.py)
            self._cluster = cluster = is_cluster(self.bus.redis)
            self.stream = _keys.lifecycle_stream(self.settings.key_prefix, self.queue, cluster=cluster)
            prefix, cap = self.settings.key_prefix, self.settings.max_payload_bytes
            self._group = StreamGroup(
                self.bus.redis, [self.stream], GROUP, self.consumer, prefix=prefix, max_bytes=cap
            )
        return self._group

    async def run_once(self, block: float | None = None, pending: bool = False) -> int:
        """Read one batch (waiting up to ``block`` seconds for one), publish it, acknowledge it.
        ``pending=True`` re-reads this consumer's unacknowledged records. Returns the records handled."""
        if pending:
            response = await self.group.read_pending({self.stream: "0"}, self.batch_size)
        else:
            response = await self.group.read_new(self.batch_size, block=block)
        if not response:
            return 0
        entries: Any = response[0][1]
        return await self._handle(entries)

    async def _handle(self, entries: Any) -> int:
        if not entries:
            return 0
        self._busy = True
        try:
            events: list[Event] = []
            poison: list[Poison] = []
            for entry_id, fields in entries:
                if not fields:
                    continue
                decoded = self._decode(entry_id, fields)
                if isinstance(decoded, Poison):
                    poison.append(decoded)
                elif decoded is not None:
                    events.append(decoded)
            if events:
                await self.bus.publish_many(events)
                self.published += len(events)
            await self.group.ack({self.stream: [entry_id for entry_id, _ in entries]}, poison)
            return len(entries)
        finally:
            self._busy = False

    def _decode(self, entry_id: Any, fields: Any) -> Event | Poison | None:
        """The event of one record, ``None`` (nothing to publish), or the record as :class:`Poison` (it
        cannot be decoded or sent: reported, for the dead-letter stream)."""
        try:
            event = lifecycle_event(LifecycleRecord.decode(fields), self._cluster)
            if event is not None:
                self.bus.envelope(event)  # what cannot be sent is refused here, alone, not with its batch
            return event
        except Exception as exc:  # any record, however broken, is skipped on its own
            where = f"{self.stream} (entry {entry_id!r})"
            reason = f"{type(exc).__name__}: {exc}"
            report_malformed("lifecycle record", where, reason, fields)
            return Poison(self.stream, entry_id, f"malformed: {reason}", fields)

    async def _claim(self) -> None:
        start: Any = "0-0"
        for _ in range(1_000):
            reply = await self.group.autoclaim(self.stream, self.claim_idle_ms / 1000, self.batch_size, start)
            start = reply[0]
            await self._handle(reply[1])
            if start in (b"0-0", "0-0") or self._stopping:
                return

    async def _step(self) -> None:
        """Own pending records first (once), idle records of gone publishers (every ``claim_idle / 2``),
        then one batch of new records (waiting up to a second for one)."""
        loop = asyncio.get_running_loop()
        if self._need_pending:
            while await self.run_once(pending=True):
                pass
            self._need_pending = False
        if loop.time() >= self._next_claim:
            await self._claim()
            self._next_claim = loop.time() + self.claim_every
        if not self._stopping:
            await self.run_once(block=min(self.claim_every, 1.0))

    async def _run(self) -> None:
        self._need_pending, self._next_claim = True, 0.0
        await consume(
            self._step,
            stopping=lambda: self._stopping,
            on_nogroup=lambda: self._create_group(lost=True),
            what="lifecycle event publisher",
            log=logger,
        )
