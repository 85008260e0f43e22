"""Messages that cannot be handled: logged (rate-limited) and skipped; durable ones dead-lettered.

* :func:`report_malformed` — one log line per bad message (its kind, where it came from, why, and a short
  preview), at most :data:`BURST` lines per source per :data:`WINDOW` seconds; beyond that, one summary
  line per window with the number skipped. A flood of garbage cannot flood the log.
* The dead-letter stream ``<ns>:events:dead`` (:func:`asyncsched._keys.dead_letter_stream`) keeps each
  stream entry that was acknowledged without being handled, written by the one stream consumer
  (:class:`asyncsched._streams.Poison`): a malformed envelope or an event whose callbacks failed every
  retry (durable subscriptions, ``group`` the agent), a lifecycle record the LifecyclePublisher cannot
  decode (``group`` ``events``), a history entry the Recorder cannot decode (``group`` ``recorder``).
  Fields: ``source`` (stream), ``entry`` (its id there), ``group``, ``reason``, ``data`` (the original
  envelope, or the entry's fields as a JSON object; cut to ``ASYNCSCHED_MAX_PAYLOAD_BYTES``) and ``at``
  (epoch seconds). Bounded (``MAXLEN ~`` :data:`DEAD_LETTER_MAXLEN`). ``asyncsched events dead-letters``
  lists, replays (events only) and deletes them (:func:`list_dead_letters`, :func:`replay_dead_letter`,
  :func:`delete_dead_letters`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from .. import _keys
from .._redis.cluster import is_cluster
from .._streams import DEAD_LETTER_MAXLEN, EntryId, Poison, StreamGroup
from ._envelope import Event, MalformedEvent

__all__ = [
    "BURST",
    "DEAD_LETTER_MAXLEN",
    "WINDOW",
    "DeadLetter",
    "dead_letter",
    "delete_dead_letters",
    "list_dead_letters",
    "preview",
    "replay_dead_letter",
    "report_malformed",
]

logger = logging.getLogger("asyncsched.events")

WINDOW = 60.0
"""Seconds of one rate-limiting window of :func:`report_malformed`."""

BURST = 5
"""Lines logged per source per window; the rest are counted and summarised."""


PREVIEW = 120


@dataclass
class _Window:
    start: float
    logged: int = 0
    skipped: int = 0


_windows: dict[str, _Window] = {}


def preview(data: object, limit: int = PREVIEW) -> str:
    """A short printable preview of a raw message."""
    if isinstance(data, bytes | bytearray | memoryview):
        text = bytes(data[: limit + 1]).decode(errors="replace")
    else:
        text = str(data)[: limit + 1]
    shown = repr(text[:limit])
    return shown + "…" if len(text) > limit else shown


def report_malformed(
    kind: str, source: str, reason: object, data: object, log: logging.Logger | None = None
) -> None:
    """Log a skipped message of ``kind`` (e.g. "event", "lifecycle record") from ``source`` (a channel
    or stream), rate-limited per source (see the module docs), on ``log`` (default ``asyncsched.events``)."""
    log = log or logger
    now = time.monotonic()
    window = _windows.get(source)
    if window is None or now - window.start >= WINDOW:
        if window is not None and window.skipped:
            log.error(
                "%d more malformed message(s) on %s were skipped without a log line in the last %.0fs",
                window.skipped,
                source,
                WINDOW,
            )
        if len(_windows) > 1000:
            _windows.clear()
        window = _windows[source] = _Window(now)
    if window.logged >= BURST:
        window.skipped += 1
        return
    window.logged += 1
    log.error("skipping a malformed %s on %s: %s; message: %s", kind, source, reason, preview(data))


def _reset_windows() -> None:
    """Forget the rate-limiting state (tests)."""
    _windows.clear()


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def dead_letter(
    redis: aioredis.Redis,
    prefix: str,
    *,
    source: str,
    entry: EntryId,
    group: str,
    reason: str,
    data: object,
    max_bytes: int | None = None,
) -> None:
    """Append one unhandled entry to the dead-letter stream outside a reader (a reader hands its poison to
    :meth:`asyncsched._streams.StreamGroup.ack`, which this calls, with nothing to acknowledge)."""
    group_ = StreamGroup(redis, [], group, "", prefix=prefix, max_bytes=max_bytes)
    await group_.ack({}, [Poison(source, entry, reason, data)])


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter stream."""

    id: str
    source: str
    entry: str
    group: str
    reason: str
    data: str
    at: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return asdict(self)


def _letter(entry_id: Any, fields: dict[Any, Any]) -> DeadLetter:
    f = {_text(k): _text(v) for k, v in fields.items()}
    try:
        at: float | None = float(f.get("at", ""))
    except ValueError:
        at = None
    return DeadLetter(
        _text(entry_id),
        f.get("source", ""),
        f.get("entry", ""),
        f.get("group", ""),
        f.get("reason", ""),
        f.get("data", ""),
        at,
    )


async def list_dead_letters(redis: aioredis.Redis, prefix: str, count: int = 100) -> list[DeadLetter]:
    """The newest ``count`` dead letters, oldest first."""
    entries: Any = await redis.xrevrange(
        _keys.dead_letter_stream(prefix, cluster=is_cluster(redis)), count=count
    )
    return [_letter(entry_id, fields) for entry_id, fields in reversed(entries)]


async def delete_dead_letters(redis: aioredis.Redis, prefix: str, ids: list[str] | None = None) -> int:
    """Delete the dead letters ``ids`` (all of them when ``None``); how many were deleted."""
    key = _keys.dead_letter_stream(prefix, cluster=is_cluster(redis))
    if ids is None:
        count = int(await redis.xlen(key))
        await redis.delete(key)
        return count
    return int(await redis.xdel(key, *ids)) if ids else 0


async def replay_dead_letter(
    redis: aioredis.Redis, prefix: str, letter_id: str, *, max_bytes: int | None = None
) -> str:
    """Deliver dead letter ``letter_id``'s event again to the agent whose consumers gave up on it (appended
    to that agent's own stream, so other agents do not see a broadcast twice) and delete the letter; the
    new entry id. ``LookupError`` if there is no such letter; :class:`MalformedEvent` if its data is not a
    valid event (a poison message is never put back: publish a corrected event instead)."""
    key = _keys.dead_letter_stream(prefix, cluster=is_cluster(redis))
    found: Any = await redis.xrange(key, min=letter_id, max=letter_id)
    if not found:
        raise LookupError(f"no dead letter {letter_id!r}")
    letter = _letter(*found[0])
    Event.from_json(letter.data, max_bytes=max_bytes)
    if not letter.group:
        raise MalformedEvent(f"dead letter {letter_id!r} names no agent to deliver it to")
    target = _keys.agent_event_stream(prefix, letter.group, cluster=is_cluster(redis))
    new_id = await redis.xadd(target, {"e": letter.data})
    await redis.xdel(key, letter_id)
    return _text(new_id)
