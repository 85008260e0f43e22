"""The lifecycle stream's accounting: reads that count what was dropped, safe trimming, exact backlog.

* **Reading** (``lua/read.lua``): the Recorder reads new entries through one script that also keeps a
  ledger (:func:`asyncsched._keys.lifecycle_ledger`): ``position``, how many entries ever added precede the
  group's last delivered one. Entries are only trimmed from the front, so if the stream's first entry lies
  past the last delivered one, ``(entries-added - length) - position`` entries were dropped unread; they
  are added to ``lost`` (exact, whoever trimmed: the producers' hard bound, an operator's XTRIM).
* **Trimming** (``lua/trim.lua``): below what every consumer group has acknowledged (the oldest pending
  entry, or the entry after the last delivered one), never an entry some group has not read.
* **Backlog**: pending + unread, from the same ledger, so it never counts lost entries (Redis' own ``lag``
  does, once anything was trimmed unread).
* :class:`LossLog`: losses are logged once per interval with their count and time range, never per record.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .. import _keys
from .._redis.cluster import is_cluster
from .._redis.scripts import ScriptRegistry, as_bytes, as_int, as_list
from ._history_rows import text

__all__ = ["DEGRADED_FOR", "HistoryLoss", "LossLog", "StreamAccount", "acked_through", "history_loss"]

DEGRADED_FOR = 3600.0
"""Seconds after the latest loss of history during which ``/health`` reports ``degraded``."""

log = logging.getLogger("asyncsched.store.recorder")

_READ = resources.files(__package__).joinpath("lua", "read.lua").read_text()
_TRIM = resources.files(__package__).joinpath("lua", "trim.lua").read_text()


_XREADGROUP = b"XREADGROUP"
"""The read's command name as bytes: redis-py then finds no reply callback for it and hands over the
entries as Redis sent them (``[id, [field, value, ...]]``); its callback's tuple and dict per entry cost
the Recorder about 1 µs a record. Should a redis-py version apply it anyway, the merge takes that shape
too (:meth:`~._history_rows.Batch.add_entries`)."""


def _entries(reply: Any) -> list[Any]:
    """The entries of a one-stream read: RESP2 ``[[stream, entries]]`` or RESP3 ``{stream: entries}``
    (nothing: ``None``/empty), as sent or as redis-py's callback parsed them."""
    if not reply:
        return []
    (entries,) = reply.values() if isinstance(reply, dict) else [item[1] for item in reply]
    return list(entries or [])


def _ms(entry_id: bytes | str) -> int:
    return int(text(entry_id).split("-", 1)[0])


def _before(a: str, b: str) -> bool:
    am, _, aseq = a.partition("-")
    bm, _, bseq = b.partition("-")
    return (int(am), int(aseq or 0)) < (int(bm), int(bseq or 0))


class StreamAccount:
    """One consumer of the lifecycle stream in group ``group``, reading through the accounting script."""

    def __init__(
        self, redis: aioredis.Redis, prefix: str, group: str, consumer: str, queue: str | None = None
    ) -> None:
        self.redis = redis
        cluster = is_cluster(redis)  # the stream and its ledger share a slot (on a cluster: ``queue``'s)
        self.stream = _keys.lifecycle_stream(prefix, queue, cluster=cluster)
        self.ledger = _keys.lifecycle_ledger(prefix, queue, cluster=cluster)
        self.group = group
        self.consumer = consumer
        self._scripts = ScriptRegistry(redis, {"read": _READ, "trim": _TRIM})
        self._cluster = cluster  # (the read's MULTI is not sent to a cluster client)

    async def read(self, count: int) -> tuple[int, tuple[int, int] | None, list[Any]]:
        """Read up to ``count`` new entries; returns (entries found lost, their time range in epoch ms
        (after the last delivered, before the first present), the entries as ``(id, fields)``, fields as
        ``[field, value, ...]`` or ``{field: value}``).

        One ``MULTI``: the accounting script (sent whole, not by SHA1: a server that forgot a script
        must not let the read run unaccounted), then ``XREADGROUP``, whose entries come straight from
        Redis. On Redis Cluster (redis-py's cluster transactions do not serve this) the script reads."""
        args = [self.group, count, int(time.time() * 1000)]
        if self._cluster:
            account = as_list(
                await self._scripts.run("read", [*args, self.consumer], [self.stream, self.ledger])
            )
            reply: Any = [[self.stream, account[3]]]
        else:
            pipe: Any = self.redis.pipeline(transaction=True)
            pipe.execute_command("EVAL", _READ, 2, self.stream, self.ledger, *args)
            # (a bytes name: redis-py applies no reply callback, see _XREADGROUP)
            pipe.execute_command(_XREADGROUP, "GROUP", self.group, self.consumer, "COUNT", count, "STREAMS",
                                 self.stream, ">")  # fmt: skip
            answered, reply = await pipe.execute(raise_on_error=False)
            for answer in (answered, reply):
                if isinstance(answer, Exception):
                    raise answer
            account = as_list(answered)
        lost, last, first = as_int(account[0]), as_bytes(account[1]), as_bytes(account[2])
        span = None
        if lost:
            until = _ms(first) if first else int(time.time() * 1000)
            span = (_ms(last) or until, until)  # nothing read before: only the end is known
        return lost, span, _entries(reply)

    async def count_lost(self, n: int) -> None:
        """Add ``n`` entries that were read but trimmed before they were recorded to the ledger."""
        if n > 0:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hincrby(self.ledger, "lost", n)  # type: ignore[unused-awaitable]
            pipe.hset(self.ledger, "last_loss_at", int(time.time() * 1000))  # type: ignore[unused-awaitable]
            await pipe.execute()

    async def trim(self) -> int:
        """Trim below what every group acknowledged; returns the entries removed."""
        return as_int(await self._scripts.run("trim", [], [self.stream]))

    async def backlog(self) -> int:
        """Entries not yet recorded: pending in the group plus unread (lost ones not counted)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.xinfo_stream(self.stream)  # type: ignore[unused-awaitable]
        pipe.xinfo_groups(self.stream)  # type: ignore[unused-awaitable]
        pipe.hget(self.ledger, "position")  # type: ignore[unused-awaitable]
        try:
            info, groups, position = await pipe.execute()
        except ResponseError:  # no stream yet
            return 0
        group = next((g for g in groups if text(g["name"]) == self.group), None)
        if group is None:
            return 0
        pending, last = int(group.get("pending") or 0), text(group["last-delivered-id"])
        length, added = int(info["length"]), int(info.get("entries-added") or 0)
        first = info.get("first-entry")
        if not length:
            unread = 0
        elif first and _before(last, text(first[0])):
            unread = length
        elif position is not None:
            unread = max(0, added - int(position))
        else:
            unread = int(group.get("lag") or 0)
        return pending + unread

    async def acked_through(self, entry_id: str) -> bool:
        """Whether the group has read and acknowledged every entry up to ``entry_id`` (inclusive)."""
        return await acked_through(self.redis, self.stream, self.group, entry_id)


async def acked_through(redis: aioredis.Redis, stream: str, group_name: str, entry_id: str) -> bool:
    """Whether ``group_name`` has read and acknowledged every entry of ``stream`` up to ``entry_id``."""
    if entry_id in ("", "0-0"):
        return True
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:
        return True  # no stream: nothing unread
    group = next((g for g in groups if text(g["name"]) == group_name), None)
    if group is None or _before(text(group["last-delivered-id"]), entry_id):
        return False
    if int(group.get("pending") or 0):
        summary = await redis.xpending(stream, group_name)
        oldest = summary.get("min")
        if oldest is not None and not _before(entry_id, text(oldest)):
            return False
    return True


@dataclass(frozen=True, slots=True)
class HistoryLoss:
    """Lifecycle records dropped before the Recorder read them (kept in Redis, for every process)."""

    lost: int
    last_loss_at: datetime | None


async def history_loss(redis: aioredis.Redis, prefix: str) -> HistoryLoss:
    """What the ledger says: records lost so far and when the latest loss was found."""
    ledger = _keys.lifecycle_ledger(prefix, cluster=is_cluster(redis))
    lost, at = await redis.hmget(ledger, ["lost", "last_loss_at"])
    when = datetime.fromtimestamp(int(at) / 1000, UTC) if at else None
    return HistoryLoss(int(lost or 0), when)


class LossLog:
    """Losses found, logged once per ``interval`` with the count and the time range (never per record)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.count = 0
        self.total = 0
        self._span: tuple[int, int] | None = None
        self._next = 0.0

    def add(self, n: int, span: tuple[int, int] | None) -> None:
        if n <= 0:
            return
        self.count += n
        self.total += n
        if span is not None:
            old = self._span
            self._span = span if old is None else (min(old[0], span[0]), max(old[1], span[1]))

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.count or (now < self._next and not force):
            return
        span = ""
        if self._span is not None:
            start, end = (datetime.fromtimestamp(ms / 1000, UTC).isoformat() for ms in self._span)
            span = f", written between {start} and {end}" if start != end else f", written by {end}"
        log.error(
            "history lost: %d lifecycle records were dropped before the Recorder read them%s "
            "(%d lost since this Recorder started). Their executions are marked 'unknown' once the "
            "Recorder has caught up; raise ASYNCSCHED_LIFECYCLE_MAXLEN to buffer longer outages",
            self.count,
            span,
            self.total,
        )
        self.count, self._span, self._next = 0, None, now + self.interval
