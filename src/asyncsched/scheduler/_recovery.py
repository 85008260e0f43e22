"""Recovery: a claimed tick whose claimer died before enqueueing it is taken over when its lease expires.

The claim script leases each tick it hands out (``LEASE``); the claimer releases the lease once the job is
enqueued. An expired lease is re-let atomically to one replica (``relet.lua``), which enqueues the tick
under the same job id (unique: enqueueing it twice is harmless, so a slow claimer and its successor never
run it twice).
"""

from __future__ import annotations

from datetime import datetime

from ._base import LEASE
from ._definition import overlap_of
from ._dispatch import Dispatch
from ._enqueue import Firing
from ._index import from_ms, to_ms

__all__ = ["Recovery"]


class Recovery(Dispatch):
    """Lease takeover, on top of :class:`Dispatch`."""

    async def _recover(self, now: datetime) -> list[Firing]:
        """Enqueue claimed ticks whose claimer died before enqueueing (idempotent: the job id is unique)."""
        fired: list[Firing] = []
        now_ms = to_ms(now)
        leases_due_ms, self._leases_due_ms = self._leases_due_ms, 0
        if now_ms < leases_due_ms:  # the loop read the earliest lease deadline just before this pass
            return fired
        for task_id, tick_ms in await self.index.expired_leases(now_ms):
            if not await self.index.relet(task_id, tick_ms, now_ms, to_ms(now + LEASE)):
                continue
            entry = self._cache.get(task_id)
            if entry is None:
                await self._reload()
                entry = self._cache.get(task_id)
            if entry is None:
                await self.index.done(task_id, tick_ms)
                continue
            task = entry.as_task()
            held = overlap_of(task) == "queue"  # held_after says whether this run waits
            firing = await self._fire_tick(task, from_ms(tick_ms), held=held)
            if firing is not None:
                fired.append(firing)
        return fired
