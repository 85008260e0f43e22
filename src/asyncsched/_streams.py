"""One consumer of a Redis Streams consumer group: the mechanism under every stream reader of the package.

The Recorder (group ``recorder``: history to SQL), the LifecyclePublisher (group ``events``: ``task.*``
events) and durable subscriptions (one group per agent) all read through :class:`StreamGroup`:

* **group creation** (:meth:`StreamGroup.ensure`): ``XGROUP CREATE ... MKSTREAM`` at the group's start
  (``$``: only what is added from now on, or ``0``: everything in the stream), an existing group kept;
* **NOGROUP recovery** (:func:`is_nogroup`): a group that vanished while its reader ran means Redis lost
  its data (restart without persistence, ``FLUSHALL``); it is created again at ``0`` (``lost=True``):
  everything now in the stream was written since then and is unread;
* **pending first** (:meth:`StreamGroup.read_pending`): on start, and after a failure, a reader re-reads
  the entries delivered to its own name and never acknowledged, from a cursor per stream, before new ones
  (:meth:`StreamGroup.read_new`): with a stable consumer name a restart resumes where it stopped;
* **claiming idle entries** (:meth:`StreamGroup.autoclaim`, :meth:`StreamGroup.claim_from`): entries of a
  reader that died are taken over after an idle time (durable subscriptions claim only from consumers
  whose alive key is gone);
* **ack after commit** (:meth:`StreamGroup.ack`): each reader acknowledges an entry only once its effect
  is committed (rows written, events published, callbacks returned);
* **backoff** (:class:`Backoff`): a failing step is retried after 0.1 s (or ``first``), doubling up to
  ``cap``; :data:`REDIS_DOWN` is what a lost connection raises. :func:`consume` is the loop of a reader:
  one step after the other, NOGROUP recovery, errors logged and retried with backoff, never ending.

On a Redis Cluster one ``XREAD``/``XREADGROUP`` may only name streams of one hash slot: a group over streams
of several slots (the Recorder's lifecycle stream and event log) reads its pending entries one stream at a
time, and :func:`wait_for_any` waits on each slot at once.

Poison entries (an entry that can never be handled) are skipped alone, never with their batch: durable
subscriptions put them in the dead-letter stream (:mod:`asyncsched.events._poison`); the Recorder and the
publisher report them (rate-limited) and acknowledge them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._redis.cluster import is_cluster

__all__ = ["REDIS_DOWN", "Backoff", "StreamGroup", "consume", "is_nogroup", "wait_for_any"]

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a lost or refused Redis connection raises."""


def is_nogroup(exc: BaseException) -> bool:
    """Whether ``exc`` says the stream or its group does not exist (Redis lost its data). The in-process
    Redis (``memory://``) words it as the XGROUP error about a missing key."""
    if not isinstance(exc, ResponseError):
        return False
    message = str(exc)
    return "NOGROUP" in message or "requires the key to exist" in message


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class Backoff:
    """Delays between retries of a failing step: ``first``, doubling, at most ``cap`` seconds."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap = first, cap
        self.delay = 0.0

    def failed(self) -> float:
        """The delay before the next try (longer after each failure in a row)."""
        self.delay = min(self.cap, self.delay * 2 if self.delay else self.first)
        return self.delay

    def reset(self) -> None:
        """A step succeeded: the next failure waits ``first`` again."""
        self.delay = 0.0


class StreamGroup:
    """Consumer ``consumer`` of group ``group`` on ``streams`` (see the module docs); ``start`` is where
    the group starts when it is first created (``$`` or ``0``)."""

    def __init__(
        self, redis: aioredis.Redis, streams: Iterable[str], group: str, consumer: str, *, start: str = "$"
    ) -> None:
        self.redis, self.streams, self.start = redis, list(streams), start
        self.group, self.consumer = group, consumer
        self.ready = False
        """The groups exist (as far as this reader knows: a NOGROUP reply says otherwise)."""

    async def ensure(self, *, lost: bool = False) -> None:
        """Create the group on every stream (and the streams) unless it exists; ``lost``: the group
        vanished (Redis lost its data), so it starts at ``0``: what the stream holds now is unread."""
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(
                    stream, self.group, id="0" if lost else self.start, mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self.ready = True

    def cursors(self) -> dict[str, str]:
        """Cursors that read this consumer's pending entries from the start (one per stream)."""
        return dict.fromkeys(self.streams, "0")

    async def read_pending(self, after: Mapping[str, str], count: int) -> Any:
        """Entries delivered to this consumer and not acknowledged, after the ids ``after`` (per stream);
        the caller moves the cursors to the last ids it got."""
        if len(after) > 1 and is_cluster(self.redis):  # one stream per call: they may be in several slots
            out: list[Any] = []
            for stream, cursor in after.items():
                out += (
                    await self.redis.xreadgroup(self.group, self.consumer, {stream: cursor}, count=count)
                    or []
                )
            return out
        return await self.redis.xreadgroup(self.group, self.consumer, dict(after), count=count)  # type: ignore[arg-type]

    async def read_new(
        self, count: int, block: float | None = None, streams: Iterable[str] | None = None
    ) -> Any:
        """Up to ``count`` entries never delivered to the group (per stream), waiting up to ``block``
        seconds for one (``None``: not at all)."""
        ids: Any = dict.fromkeys(self.streams if streams is None else streams, ">")
        wait = None if block is None else max(1, int(block * 1000))
        return await self.redis.xreadgroup(self.group, self.consumer, ids, count=count, block=wait)

    async def ack(self, entries: Mapping[str, list[Any]]) -> None:
        """Acknowledge the ids per stream (one round trip): their effect is committed."""
        pipe = self.redis.pipeline(transaction=False)
        for stream, ids in entries.items():
            if ids:
                pipe.xack(stream, self.group, *ids)  # type: ignore[unused-awaitable]
        await pipe.execute()

    async def ack_one(self, stream: str, entry_id: Any) -> None:
        """Acknowledge one entry (its effect is committed)."""
        await self.redis.xack(stream, self.group, entry_id)

    async def autoclaim(
        self, stream: str, min_idle: float, count: int, start: Any = "0-0", *, justid: bool = False
    ) -> Any:
        """``XAUTOCLAIM``: take over entries of the group idle for ``min_idle`` seconds, from ``start``;
        the reply is ``[next start, entries, ...]``."""
        idle = int(min_idle * 1000)
        return await self.redis.xautoclaim(
            stream, self.group, self.consumer, idle, start_id=start, count=count, justid=justid
        )

    async def claim_from(self, stream: str, owner: str, min_idle: float, count: int) -> list[Any]:
        """Take over up to ``count`` pending entries of consumer ``owner`` idle for ``min_idle`` seconds;
        the entries (``[]`` when there are none)."""
        idle = max(1, int(min_idle * 1000))
        pending = await self.redis.xpending_range(
            stream, self.group, "-", "+", count, consumername=owner, idle=idle
        )
        if not pending:
            return []
        ids: Any = [p["message_id"] for p in pending]
        return list(await self.redis.xclaim(stream, self.group, self.consumer, idle, ids) or [])

    async def forget_idle(self, stream: str, min_idle: float) -> None:
        """Remove from the group the other consumers with nothing pending, silent for ``min_idle`` seconds
        (readers that are gone; a live one that was only stalled is added back by its next read)."""
        for c in await self.redis.xinfo_consumers(stream, self.group):
            if not c["pending"] and c["idle"] > min_idle * 1000 and _text(c["name"]) != self.consumer:
                await self.redis.xgroup_delconsumer(stream, self.group, c["name"])


async def wait_for_any(redis: aioredis.Redis, ids: Mapping[str, str], block_ms: int) -> None:
    """Wait until an entry follows ``ids`` (stream -> id) in any of the streams, or ``block_ms`` pass; reads
    nothing for the caller. On a cluster each stream is waited on by its own ``XREAD`` (they may be in
    several slots) and the others are cancelled once one returns (an ``XREAD`` consumes nothing)."""
    if len(ids) < 2 or not is_cluster(redis):
        await redis.xread(dict(ids), count=1, block=block_ms)  # type: ignore[arg-type]
        return
    waits = [asyncio.ensure_future(redis.xread({s: i}, count=1, block=block_ms)) for s, i in ids.items()]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # an error of the one that returned is the caller's
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def consume(
    step: Callable[[], Awaitable[object]],
    *,
    stopping: Callable[[], bool],
    on_nogroup: Callable[[], Awaitable[None]],
    what: str,
    log: logging.Logger,
    backoff: Backoff | None = None,
) -> None:
    """Run ``step`` (one read and its handling) until ``stopping()``: the loop of a stream reader.

    A NOGROUP reply runs ``on_nogroup`` (recreate the group) and goes on at once; Redis down is logged
    as a warning, any other error as an error; both are retried after the ``backoff`` delay. The loop
    never ends on an error (cancellation ends it)."""
    backoff = backoff or Backoff()
    while not stopping():
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except ResponseError as exc:
            if is_nogroup(exc):
                log.warning("%s: its consumer group vanished (Redis lost its data); recreated", what)
                await on_nogroup()
                continue
            log.error("%s: %s", what, exc)
        except REDIS_DOWN as exc:
            log.warning("%s lost Redis (%s); retrying", what, exc)
        except Exception:
            log.exception("%s: unexpected error; retrying", what)
        else:
            backoff.reset()
            continue
        await asyncio.sleep(backoff.failed())
