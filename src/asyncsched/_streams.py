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

* **poison entries to a dead-letter stream** (:class:`Poison`, :meth:`StreamGroup.ack`): an entry that can
  never be handled (it does not decode, or a durable callback failed every retry) is skipped alone, never
  with its batch: the reader logs it (rate-limited, :func:`asyncsched.events._poison.report_malformed`) and
  hands it to :meth:`StreamGroup.ack` with its batch, which appends it to the dead-letter stream
  ``<ns>:events:dead`` (its stream, entry id, group, reason and data; see :mod:`asyncsched.events._poison`,
  which lists, replays and deletes them) in the same ``MULTI`` as the acknowledgement. Counted per group
  in :data:`dead_lettered` (``asyncsched_dead_lettered_total`` of /metrics). The Recorder, the
  LifecyclePublisher and durable subscriptions all do so.

On a Redis Cluster one ``XREAD``/``XREADGROUP`` may only name streams of one hash slot: a group over streams
of several slots (the Recorder's lifecycle stream and event log) reads its pending entries one stream at a
time, and :func:`wait_for_any` waits on each slot at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._keys import dead_letter_stream
from ._redis.cluster import is_cluster
from .config import get_settings

__all__ = [
    "DEAD_LETTER_MAXLEN",
    "REDIS_DOWN",
    "Backoff",
    "Entry",
    "EntryId",
    "Poison",
    "StreamEntries",
    "StreamGroup",
    "consume",
    "dead_lettered",
    "is_nogroup",
    "wait_for_any",
]

EntryId: TypeAlias = bytes | str
"""A stream entry's id (``b"1700000000000-0"``; text where the caller gave it as text)."""

Entry: TypeAlias = tuple[EntryId, dict[bytes, bytes]]
"""One entry: its id and its fields (empty for an entry trimmed while pending)."""

StreamEntries: TypeAlias = list[tuple[bytes | str, list[Entry]]]
"""An ``XREADGROUP`` reply: per stream read, its entries (an empty list: nothing; ``None`` is not used)."""

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a lost or refused Redis connection raises."""

DEAD_LETTER_MAXLEN = 10_000
"""Approximate bound of the dead-letter stream (oldest trimmed first)."""

dead_lettered: dict[str, int] = {}
"""Entries this process put in the dead-letter stream, by consumer group (``recorder``, ``events``, an
agent's name)."""


@dataclass(frozen=True, slots=True)
class Poison:
    """An entry its reader can never handle, for the dead-letter stream: where it was (``stream``,
    ``entry_id``), why (``reason``) and what it held (``data``: the raw field or fields)."""

    stream: str
    entry_id: EntryId
    reason: str
    data: object

    def fields(self, group: str, max_bytes: int) -> dict[str, str | bytes]:
        """The dead letter's fields; ``data`` cut to ``max_bytes`` (the reason then says so)."""
        raw = _raw(self.data)
        reason = self.reason
        if len(raw) > max_bytes:
            raw, reason = raw[:max_bytes], f"{reason} (data cut to {max_bytes} bytes)"
        return {
            "source": _text(self.stream),
            "entry": _text(self.entry_id),
            "group": group,
            "reason": reason[:1000],
            "data": raw,
            "at": repr(time.time()),
        }


def _raw(data: object) -> str | bytes:
    """An entry's data as stored in a dead letter: text or bytes as they are, fields as a JSON object."""
    if isinstance(data, bytes | str):
        return data
    if isinstance(data, list | tuple) and len(data) % 2 == 0:  # a flat field/value reply
        data = dict(zip(data[::2], data[1::2], strict=True))
    if isinstance(data, Mapping):
        return json.dumps({_text(k): _text(v) for k, v in data.items()}, ensure_ascii=False)
    return repr(data)


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
        self,
        redis: aioredis.Redis,
        streams: Iterable[str],
        group: str,
        consumer: str,
        *,
        start: str = "$",
        prefix: str | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.redis, self.streams, self.start = redis, list(streams), start
        self.group, self.consumer = group, consumer
        self.dead_letters = None if prefix is None else dead_letter_stream(prefix, cluster=is_cluster(redis))
        """The dead-letter stream of the key prefix ``prefix`` (``None``: a reader that must not meet
        poison); a letter's data is cut to ``max_bytes`` (default: ``ASYNCSCHED_MAX_PAYLOAD_BYTES``)."""
        self.max_bytes = max_bytes
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

    async def read_pending(self, after: Mapping[str, str], count: int) -> StreamEntries:
        """Entries delivered to this consumer and not acknowledged, after the ids ``after`` (per stream);
        the caller moves the cursors to the last ids it got."""
        if len(after) > 1 and is_cluster(self.redis):  # one stream per call: they may be in several slots
            out: StreamEntries = []
            for stream, cursor in after.items():
                out += await self.read_pending({stream: cursor}, count)
            return out
        ids: Any = dict(after)
        reply = await self.redis.xreadgroup(self.group, self.consumer, ids, count=count)
        return cast("StreamEntries", reply or [])  # RESP2's reply, as every client of the package speaks

    async def read_new(
        self, count: int, block: float | None = None, streams: Iterable[str] | None = None
    ) -> StreamEntries:
        """Up to ``count`` entries never delivered to the group (per stream), waiting up to ``block``
        seconds for one (``None``: not at all)."""
        ids: Any = dict.fromkeys(self.streams if streams is None else streams, ">")
        wait = None if block is None else max(1, int(block * 1000))
        reply = await self.redis.xreadgroup(self.group, self.consumer, ids, count=count, block=wait)
        return cast("StreamEntries", reply or [])

    async def ack(self, entries: Mapping[str, Sequence[EntryId]], poison: Sequence[Poison] = ()) -> None:
        """Acknowledge the ids per stream (one round trip): their effect is committed. The ``poison``
        entries among them go to the dead-letter stream in the same ``MULTI`` (all or nothing)."""
        if poison and self.dead_letters is None:
            raise RuntimeError(
                f"stream group {self.group!r} has no dead-letter stream for its poison entries"
            )
        if poison and is_cluster(self.redis) and entries:
            # the dead-letter stream is in the bus's slot, the acknowledged streams maybe not: no MULTI
            # across slots, so the letters first, then the acknowledgement (a crash in between repeats a
            # letter, never loses one)
            await self.ack({}, poison)
            await self.ack(entries)
            return
        pipe = self.redis.pipeline(transaction=bool(poison))
        for letter in poison:
            cap = get_settings().max_payload_bytes if self.max_bytes is None else self.max_bytes
            fields: Any = letter.fields(self.group, cap)
            pipe.xadd(self.dead_letters, fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True)  # type: ignore[unused-awaitable, arg-type]
        for stream, ids in entries.items():
            if ids:
                pipe.xack(stream, self.group, *ids)  # type: ignore[unused-awaitable]
        await pipe.execute()
        if poison:
            dead_lettered[self.group] = dead_lettered.get(self.group, 0) + len(poison)

    async def ack_one(self, stream: str, entry_id: EntryId, poison: Poison | None = None) -> None:
        """Acknowledge one entry (its effect is committed), dead-lettered when it is ``poison``."""
        if poison is None:
            await self.redis.xack(stream, self.group, entry_id)
        else:
            await self.ack({stream: [entry_id]}, [poison])

    async def autoclaim(
        self, stream: str, min_idle: float, count: int, start: EntryId = "0-0", *, justid: bool = False
    ) -> tuple[EntryId, list[Entry] | list[EntryId]]:
        """``XAUTOCLAIM``: take over entries of the group idle for ``min_idle`` seconds, from ``start``;
        the next start (``0-0`` once the whole group was scanned) and the entries taken (their ids alone
        with ``justid``)."""
        idle = int(min_idle * 1000)
        reply = await self.redis.xautoclaim(
            stream, self.group, self.consumer, idle, start_id=start, count=count, justid=justid
        )
        if justid:  # redis-py answers the claimed ids alone (no next start): as if the scan were done
            return b"0-0", cast("list[EntryId]", list(reply))
        return cast("EntryId", reply[0]), cast("list[Entry]", list(reply[1]))

    async def claim_from(self, stream: str, owner: str, min_idle: float, count: int) -> list[Entry]:
        """Take over up to ``count`` pending entries of consumer ``owner`` idle for ``min_idle`` seconds;
        the entries (``[]`` when there are none)."""
        idle = max(1, int(min_idle * 1000))
        pending = await self.redis.xpending_range(
            stream, self.group, "-", "+", count, consumername=owner, idle=idle
        )
        if not pending:
            return []
        ids: Any = [p["message_id"] for p in pending]
        claimed = await self.redis.xclaim(stream, self.group, self.consumer, idle, ids)
        return cast("list[Entry]", list(claimed or []))

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
