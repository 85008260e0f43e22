"""The Redis side of the scheduler: next-fire index, tick claims, leases of claimed runs, change feed.

SQL (:class:`ScheduledTask`) is the source of truth; this index is rebuilt from it at start. Every write
that decides whether a tick runs is one Lua script (``lua/*.lua``), so replicas never race across round trips.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from .. import _keys
from .._redis.cluster import is_cluster
from .._redis.scripts import ScriptRegistry, as_int, as_list
from ..rq._scripts import keyed, with_life
from ..rq.keys import RQKeys
from ..rq.slots import sched_status_mirror
from ..store.models import ScheduledTask
from ._overlap import copy_statuses

__all__ = [
    "DROP",
    "FIRED_MAXLEN",
    "Claim",
    "ClaimRequest",
    "Overlap",
    "ScheduleIndex",
    "WakeState",
    "from_ms",
    "signature",
    "to_ms",
]

DROP = "-"
"""Signature argument of :meth:`ScheduleIndex.claim` that removes the task from the index entirely."""

FIRED_MAXLEN = 10_000


@dataclass(frozen=True)
class Overlap:
    """What :meth:`ScheduleIndex.claim` needs to judge ``overlap`` and record a skipped tick."""

    policy: str = "allow"
    queue: str = "default"
    agent_name: str = ""
    task_name: str = ""
    function: str = ""
    now: float = 0.0
    lifecycle_maxlen: int = 1_000_000


@dataclass(frozen=True)
class Claim:
    """Outcome of a claim: ``code`` 1 owned, 0 moved by another replica, -1 stale schedule; ``decisions``:
    per tick ``run``, ``hold`` (enqueue once the previous run ended) or ``skip`` (recorded as skipped)."""

    code: int
    decisions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClaimRequest:
    """The arguments of one claim (see :meth:`ScheduleIndex.claim`)."""

    task_id: str
    seen_ms: int
    next_ms: int | None
    ticks_ms: Sequence[int]
    lease_deadline_ms: int
    sig: str = ""
    job_ids: Sequence[str] = ()
    overlap: Overlap | None = None


@dataclass(frozen=True)
class WakeState:
    """See :meth:`ScheduleIndex.wake_state` (times in epoch ms; ``None``: nothing indexed / leased)."""

    next_ms: int | None
    lease_ms: int | None
    version: int
    indexed: bool
    due: list[tuple[str, int]]

    @property
    def earliest(self) -> int | None:
        """The earliest time anything is due: a next tick or an expiring lease."""
        times = [t for t in (self.next_ms, self.lease_ms) if t is not None]
        return min(times) if times else None


def _script(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


# Read once, at import (never from a coroutine); the claim derives the previous run's job key (lib_keys.lua)
# and writes the lifecycle records of skipped ticks (lib_life.lua)
_SOURCES = {"claim": keyed(with_life(_script("claim"))), "sync": _script("sync"), "relet": _script("relet")}


def to_ms(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime (the index's score)."""
    return round(dt.timestamp() * 1000)


def from_ms(ms: int | float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def signature(task: ScheduledTask) -> str:
    """What the index entry of ``task`` depends on: a change re-plans its next tick from now."""
    parts = [task.type, task.schedule, task.timezone, (task.options or {}).get("start"), bool(task.enabled)]
    align = (task.options or {}).get("align")
    if align is not None or task.anchor_at is not None:  # (absent on rows older than these: unchanged)
        anchor = task.anchor_at
        parts += [align, None if anchor is None else to_ms(anchor.replace(tzinfo=anchor.tzinfo or UTC))]
    return hashlib.sha1(json.dumps(parts, default=str).encode(), usedforsecurity=False).hexdigest()[:16]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pending_member(task_id: str, tick_ms: int) -> str:
    return f"{task_id}:{tick_ms}"


class ScheduleIndex:
    """Typed wrappers around the scheduler's keys and scripts for one key prefix."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        c = self.cluster = is_cluster(redis)  # every key below in one hash slot, the scheduler's
        self.next_key = _keys.sched_next(prefix, cluster=c)
        self.sig_key = _keys.sched_sig(prefix, cluster=c)
        self.pending_key = _keys.sched_pending(prefix, cluster=c)
        self.fired_key = _keys.sched_fired(prefix, cluster=c)
        self.channel = _keys.sched_changes(prefix)
        self.version_key = _keys.sched_version(prefix, cluster=c)
        self.last_key = _keys.sched_last(prefix, cluster=c)
        self.held_key = _keys.sched_held(prefix, cluster=c)
        self.lifecycle_key = _keys.lifecycle_stream(prefix, cluster=c)  # cluster: the scheduler's own
        self.job_prefix = RQKeys(prefix, cluster=c).job("")
        # The claim script reads the previous run's status at key_job(status_base, id) (lib_keys.lua): the
        # job hash itself, or on a cluster a copy of its status in the scheduler's own slot (_overlap).
        self.status_base = sched_status_mirror(prefix) if c else prefix
        self.status_prefix = RQKeys(self.status_base).job("")
        self.prefix = prefix
        self._scripts = ScriptRegistry(redis, _SOURCES)

    async def sync(self, task_id: str, sig: str, next_ms: int | None) -> bool:
        """Index ``task_id`` at ``next_ms`` unless it already follows ``sig``; ``None`` drops it."""
        args = [task_id, sig, "" if next_ms is None else next_ms]
        return bool(await self._scripts.run("sync", args, [self.next_key, self.sig_key]))

    async def drop(self, task_id: str) -> None:
        await self.sync(task_id, "", None)

    async def indexed_ids(self) -> set[str]:
        members = await self.redis.zrange(self.next_key, 0, -1)
        sigs = await self.redis.hkeys(self.sig_key)
        return {_text(m) for m in members} | {_text(s) for s in sigs}

    async def wrong_types(self) -> list[tuple[str, str]]:
        """The index's keys that hold another type than the index writes (a foreign client's ``SET`` or
        ``LPUSH``), as ``(key, type found)``, deleted: every one is derived from SQL or short-lived, and
        :meth:`Dispatch.rebuild_index` writes them again (each command on them would fail WRONGTYPE)."""
        shapes = (
            (self.next_key, "zset"), (self.sig_key, "hash"), (self.pending_key, "zset"),
            (self.held_key, "hash"), (self.fired_key, "stream"), (self.last_key, "hash"),
            (self.version_key, "string"),
        )  # fmt: skip
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, _ in shapes:
                pipe.type(key)  # type: ignore[unused-awaitable]
            found = [_text(t) for t in await pipe.execute()]
        pairs = zip(shapes, found, strict=True)
        bad = [(key, kind) for (key, want), kind in pairs if kind not in (want, "none")]
        if bad:
            await self.redis.delete(*(key for key, _ in bad))
        return bad

    async def unknown_ids(self, known: Container[str]) -> set[str]:
        """The indexed task ids not in ``known``, read a few hundred at a time (``ZSCAN``, ``HSCAN``): the
        whole index read at once (:meth:`indexed_ids`) was a transient of ~50 MB at 100,000 tasks."""
        found: set[str] = set()
        async for member, _score in self.redis.zscan_iter(self.next_key, count=500):
            if (task_id := _text(member)) not in known:
                found.add(task_id)
        async for field, _sig in self.redis.hscan_iter(self.sig_key, count=500):
            if (task_id := _text(field)) not in known:
                found.add(task_id)
        return found

    async def due(self, now_ms: int, limit: int = 500) -> list[tuple[str, int]]:
        rows: list[Any] = await self.redis.zrangebyscore(
            self.next_key, "-inf", now_ms, start=0, num=limit, withscores=True
        )
        return [(_text(member), int(score)) for member, score in rows]

    async def score(self, task_id: str) -> int | None:
        value = await self.redis.zscore(self.next_key, task_id)
        return None if value is None else int(value)

    async def claim(
        self,
        task_id: str,
        seen_ms: int,
        next_ms: int | None,
        ticks_ms: Sequence[int],
        lease_deadline_ms: int,
        sig: str = "",
        *,
        job_ids: Sequence[str] = (),
        overlap: Overlap | None = None,
    ) -> Claim:
        """Advance ``task_id`` from ``seen_ms`` to ``next_ms``, decide each tick's overlap and lease the
        ticks that run or are held (``job_ids``: the job id of each tick)."""
        request = ClaimRequest(task_id, seen_ms, next_ms, ticks_ms, lease_deadline_ms, sig, job_ids, overlap)
        return (await self.claim_many([request]))[0]

    async def claim_many(self, requests: Sequence[ClaimRequest]) -> list[Claim]:
        """Run one claim script per request, all in one pipelined round trip (each claim stays atomic and
        independent: pipelining only saves the round trips of a pass over many due tasks)."""
        keys = [self.next_key, self.pending_key, self.fired_key, self.sig_key]
        keys += [self.last_key, self.held_key, self.lifecycle_key]
        if self.cluster:
            judged = [
                r.task_id for r in requests if r.sig != DROP and (r.overlap or Overlap()).policy != "allow"
            ]
            await copy_statuses(self.redis, self.last_key, self.job_prefix, self.status_prefix, judged)
        replies = await self._scripts.run_many("claim", [(keys, self._claim_args(r)) for r in requests])
        claims = [as_list(reply) for reply in replies]
        return [Claim(as_int(r[0]), tuple(_text(d) for d in r[1:])) for r in claims]

    def _claim_args(self, r: ClaimRequest) -> list[Any]:
        o = r.overlap or Overlap()
        args: list[Any] = [r.task_id, r.seen_ms, "" if r.next_ms is None else r.next_ms, r.lease_deadline_ms]
        args += [FIRED_MAXLEN, r.sig, o.policy, self.status_base, repr(o.now), o.lifecycle_maxlen]
        args += [o.queue, o.agent_name, o.task_name, o.function]
        ids = list(r.job_ids) or [""] * len(r.ticks_ms)
        for tick, job_id in zip(r.ticks_ms, ids, strict=True):
            args += [tick, job_id]
        return args

    async def held_after(self, task_id: str, tick_ms: int) -> str | None:
        """The job a held run (``overlap: queue``) waits for, or ``None`` for a run that does not wait."""
        value = await self.redis.hget(self.held_key, pending_member(task_id, tick_ms))
        return None if value is None else _text(value)

    async def done(self, task_id: str, tick_ms: int) -> None:
        member = pending_member(task_id, tick_ms)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.pending_key, member)  # type: ignore[unused-awaitable]
            pipe.hdel(self.held_key, member)  # type: ignore[unused-awaitable]
            await pipe.execute()

    async def done_many(self, ticks: Sequence[tuple[str, int]]) -> None:
        """:meth:`done` for many enqueued ticks, in one round trip."""
        if not ticks:
            return
        members = [pending_member(task_id, tick_ms) for task_id, tick_ms in ticks]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.pending_key, *members)  # type: ignore[unused-awaitable]
            pipe.hdel(self.held_key, *members)  # type: ignore[unused-awaitable]
            await pipe.execute()

    async def sync_many(self, entries: Sequence[tuple[str, str, int | None]]) -> None:
        """:meth:`sync` for many ``(task id, signature, next ms)``, pipelined in chunks of 1,000."""
        keys = [self.next_key, self.sig_key]
        for start in range(0, len(entries), 1000):
            calls = [
                (keys, [task_id, sig, "" if next_ms is None else next_ms])
                for task_id, sig, next_ms in entries[start : start + 1000]
            ]
            await self._scripts.run_many("sync", calls)

    async def expired_leases(self, now_ms: int, limit: int = 100) -> list[tuple[str, int]]:
        rows = await self.redis.zrangebyscore(self.pending_key, "-inf", now_ms, start=0, num=limit)
        out = []
        for row in rows:
            task_id, _, tick = _text(row).rpartition(":")
            out.append((task_id, int(tick)))
        return out

    async def relet(self, task_id: str, tick_ms: int, now_ms: int, deadline_ms: int) -> bool:
        args = [pending_member(task_id, tick_ms), now_ms, deadline_ms]
        return bool(await self._scripts.run("relet", args, [self.pending_key]))

    async def wake_state(
        self, now_ms: int | None = None, due_limit: int = 0, release: Sequence[tuple[str, int]] = ()
    ) -> WakeState:
        """What the firing loop reads between passes, in one round trip: the earliest next tick and lease
        deadline, the change counter, whether the index exists and (``due_limit``) the entries due at
        ``now_ms`` (as :meth:`due`). ``release``: ticks whose leases to release first (:meth:`done_many`)."""
        members = [pending_member(task_id, tick_ms) for task_id, tick_ms in release]
        async with self.redis.pipeline(transaction=False) as pipe:
            if members:  # (not one transaction: a claim between the two sees the job itself, as after both)
                pipe.zrem(self.pending_key, *members)  # type: ignore[unused-awaitable]
                pipe.hdel(self.held_key, *members)  # type: ignore[unused-awaitable]
            pipe.zrange(self.next_key, 0, 0, withscores=True)  # type: ignore[unused-awaitable]
            pipe.zrange(self.pending_key, 0, 0, withscores=True)  # type: ignore[unused-awaitable]
            pipe.get(self.version_key)  # type: ignore[unused-awaitable]
            pipe.exists(self.sig_key)  # type: ignore[unused-awaitable]
            if due_limit and now_ms is not None:
                pipe.zrangebyscore(  # type: ignore[unused-awaitable]
                    self.next_key, "-inf", now_ms, start=0, num=due_limit, withscores=True
                )
            replies = await pipe.execute()
        first, lease, version, indexed, *due = replies[2 if members else 0 :]
        return WakeState(
            int(first[0][1]) if first else None,
            int(lease[0][1]) if lease else None,
            int(version or 0),
            bool(indexed),
            [(_text(member), int(score)) for member, score in due[0]] if due else [],
        )

    async def earliest(self) -> int | None:
        """The earliest time (ms) anything is due: a next tick or an expiring lease."""
        return (await self.wake_state()).earliest

    async def notify(self, task_id: str | None = None) -> None:
        """Tell every replica that schedules changed (pub/sub now, version counter for the missed message)."""
        if self.cluster:  # a channel is no key: no MULTI with PUBLISH on a cluster; the counter goes first
            await self.redis.incr(self.version_key)
            await self.redis.publish(self.channel, task_id or "*")
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(self.version_key)  # type: ignore[unused-awaitable]
            pipe.publish(self.channel, task_id or "*")  # type: ignore[unused-awaitable]
            await pipe.execute()

    async def version(self) -> int:
        value = await self.redis.get(self.version_key)
        return int(value or 0)

    async def fired(self, count: int = FIRED_MAXLEN) -> list[tuple[str, int]]:
        """Claimed ticks, oldest first: ``(task id, tick ms)``."""
        rows: Any = await self.redis.xrange(self.fired_key, count=count)
        return [(_text(fields[b"task"]), int(fields[b"tick"])) for _id, fields in rows]
