"""The Recorder's periodic duties, in one background task beside its write loop.

* trim the lifecycle stream below what every consumer group acknowledged (every ``trim_interval``);
* log the losses found since the last line (at most once per ``loss_log_interval``);
* notice that Redis lost its data (its ``run_id`` changed and the marker key set at start is gone; on a
  Redis Cluster per master: :mod:`asyncsched.store._redis_wipe`) and say so once, naming the master, with
  what the history knows was in flight there; the reconciler then starts over;
* reconcile open executions with Redis (every ``reconcile_interval``);
* apply the retention (every ``prune_interval``).

A failing duty is logged once per kind of failure and retried at the next tick; it never stops the others
or the write loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any, Protocol

import redis.asyncio as aioredis

from .._supervise import Supervised, cancel_until_done
from ..config import Settings
from ._database import Database
from ._history_loss import LossLog, StreamAccount
from ._reconcile import Reconciler
from ._redis_wipe import RedisWipes, Wipe, open_by_queue
from ._repository import ExecutionRepository, prune

__all__ = ["Watch", "Watched"]


class Watched(Protocol):
    """What the duties need of their :class:`~asyncsched.store.Recorder` (it has all of it)."""

    settings: Settings
    redis: aioredis.Redis
    db: Database
    account: StreamAccount
    losses: LossLog
    reconciler: Reconciler
    retention: timedelta | None


log = logging.getLogger("asyncsched.store.recorder")

_STOP_GRACE = 10.0
"""Seconds :meth:`Watch.stop` waits for the duty under way before cancelling it."""


class Watch:
    """Background duties of one :class:`~asyncsched.store.Recorder` (see the module docstring)."""

    def __init__(
        self, recorder: Watched, *, trim_interval: float, reconcile_interval: float, prune_interval: float
    ) -> None:
        self.recorder = recorder
        self.trim_interval = trim_interval
        self.reconcile_interval = reconcile_interval
        self.prune_interval = prune_interval
        self.trimmed = 0
        """Entries trimmed (all acknowledged by every group) so far."""
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.wipes: RedisWipes | None = RedisWipes(recorder.redis, recorder.settings.key_prefix)
        """Watches every Redis master for a wipe; ``None``: not this Recorder's duty (a cluster's lanes)."""
        self._next: dict[str, float] = {}
        self._failing: set[str] = set()

    async def start(self) -> None:
        self._stop.clear()
        with contextlib.suppress(Exception):  # Redis may be down: the first tick tries again
            await self._check_redis(first=True)
        # supervised: a duty loop that crashes (the guarded duties cannot, the loss flush could) is logged
        # and restarted with backoff
        self._task = Supervised("asyncsched-recorder-watch", self._loop, done=self._stop.is_set).start().task

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        # Let the duty under way finish (a cancelled database session leaves a connection that SQLAlchemy
        # can only roll back from the garbage collector, with a traceback); cancel only if it hangs.
        await cancel_until_done(task, grace=_STOP_GRACE)
        if not task.cancelled() and task.exception() is not None:
            log.warning("recorder: background duties ended with %r", task.exception())

    async def _loop(self) -> None:
        duties = (
            ("trim", self.trim_interval, self._trim),
            ("redis", self.trim_interval, self._check_redis),
            ("reconcile", self.reconcile_interval, self._reconcile),
            ("prune", self.prune_interval, self._prune),
        )
        while not self._stop.is_set():
            now = time.monotonic()
            for name, every, duty in duties:
                if now >= self._next.get(name, 0.0):
                    self._next[name] = now + every
                    await self._guard(name, duty)
            self.recorder.losses.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(self.trim_interval, self.reconcile_interval))

    async def _guard(self, name: str, duty: Any) -> None:
        try:
            await duty()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if name not in self._failing:
                self._failing.add(name)
                log.warning("recorder: %s failed (%s: %s); retrying", name, type(exc).__name__, exc)
            return
        self._failing.discard(name)

    async def _trim(self) -> None:
        self.trimmed += await self.recorder.account.trim()

    async def _check_redis(self, first: bool = False) -> None:
        if self.wipes is None:
            return
        found = await self.wipes.check(first=first)
        if not found:
            return
        if self.wipes.cluster:
            await self._report_cluster_wipes(self.wipes, found)
        else:
            await self._report_wipe(found[0])
        self.recorder.reconciler.restart()
        self._next["reconcile"] = 0.0

    def _within(self) -> str:
        return f"marked 'unknown' within {self.reconcile_interval + self.recorder.reconciler.min_age:.0f}s"

    async def _report_wipe(self, wipe: Wipe) -> None:
        counts: dict[str, int] = {}
        with contextlib.suppress(Exception):
            counts = await ExecutionRepository(self.recorder.db).counts()
        log.error(
            "Redis LOST ITS DATA (restarted without persistence, or flushed; run_id %s -> %s): jobs it held "
            "are gone, with any lifecycle records not yet recorded. Open executions in the history: %s; "
            "those whose jobs are gone are %s. Configure Redis persistence (appendonly yes), see "
            "docs/fault-tolerance.md",
            wipe.previous[:8],
            wipe.run_id[:8],
            _statuses(counts),
            self._within(),
        )

    async def _report_cluster_wipes(self, wipes: RedisWipes, found: list[Wipe]) -> None:
        by_queue: dict[str, dict[str, int]] = {}
        with contextlib.suppress(Exception):
            by_queue = await open_by_queue(self.recorder.db)
        for wipe in found:
            node = wipe.node or "?"
            queues, held = wipes.held_by(node, by_queue)
            opened = "; ".join(f"{q}: {_statuses(by_queue[q])}" for q in queues) or "none"
            log.error(
                "Redis Cluster master %s LOST ITS DATA (restarted without persistence, or flushed; run_id "
                "%s -> %s): the jobs of the queues in its slots are gone, with any lifecycle records not yet "
                "recorded. Open executions in the history of its queues: %s; those whose jobs are gone are "
                "%s. Also lost there: %s. Configure Redis persistence (appendonly yes), see "
                "docs/fault-tolerance.md",
                node,
                wipe.previous[:8],
                wipe.run_id[:8],
                opened,
                self._within(),
                ", ".join(held) or "nothing else of asyncsched's",
            )

    async def _reconcile(self) -> None:
        await self.recorder.reconciler.run_once()

    async def _prune(self) -> None:
        retention = self.recorder.retention
        if retention is None:
            return
        result = await prune(self.recorder.db, retention)
        if result.executions or result.events:
            log.info(
                "retention: pruned %d executions and %d events older than %s",
                result.executions,
                result.events,
                retention,
            )


def _statuses(counts: dict[str, int]) -> str:
    """``20 queued, 1 running`` (the open statuses of ``counts`` that have executions), or ``none``."""
    open_ = [(s, counts.get(s, 0)) for s in ("scheduled", "deferred", "queued", "running")]
    return ", ".join(f"{n} {s}" for s, n in open_ if n) or "none"
