"""The Recorder on a Redis Cluster: one :class:`Recorder` per lifecycle stream (:mod:`asyncsched._lanes`),
each in the same consumer group with its ledger in its stream's slot. :func:`open_recorder` gives a plain
Recorder on a single node, where nothing of this runs.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import redis.asyncio as aioredis

from .. import _keys
from .._lanes import Lanes, on_cluster
from .._streams import StreamGroup
from ..config import Settings, get_settings
from ._database import Database
from ._history_loss import StreamAccount
from ._recorder import GROUP, Recorder

__all__ = ["LaneRecorder", "RecorderLanes", "open_recorder"]


class LaneRecorder(Recorder):
    """The Recorder of one queue's lifecycle stream on a cluster (``queue``: its name in Redis, ``{q}``):
    no event log, no retention pruning, reconciling or watching Redis for a wipe (the main Recorder's
    duties), only its stream."""

    def __init__(
        self, redis: aioredis.Redis, *, db: Database, settings: Settings, queue: str, **options: Any
    ):
        inf = math.inf
        own = {"events": False, "retention": False, "reconcile_interval": inf, "prune_interval": inf}
        super().__init__(redis, db=db, settings=settings, **{**options, **own})  # the main's duties: not here
        prefix = self.settings.key_prefix
        self.queue = queue
        self.lifecycle_stream = _keys.lifecycle_stream(prefix, queue, cluster=True)
        self.streams = [self.lifecycle_stream]
        self.group = StreamGroup(self.redis, self.streams, GROUP, self.consumer, start="0", prefix=prefix)
        self.account = StreamAccount(self.redis, prefix, GROUP, self.consumer, queue=queue)
        self.hold.stream = self.lifecycle_stream
        self.watch.wipes = None  # the main Recorder watches every master: one report of a wipe
        self._pending = dict.fromkeys(self.streams, "0")


class RecorderLanes(Lanes[Recorder]):
    """Every lifecycle stream of a cluster recorded (see :mod:`asyncsched._lanes`): the Recorder of the
    scheduler's stream and the event log, and a :class:`LaneRecorder` per queue; with :class:`Recorder`'s
    ``flush``, ``recorded`` and ``backlog``. Made by :func:`open_recorder`."""

    def client(self) -> aioredis.Redis:
        return self.main.redis

    async def flush(self) -> int:
        """Write everything readable now on every stream (queues found meanwhile included)."""
        await self.discover()
        counts = await asyncio.gather(self.main.flush(), *(lane.flush() for lane in self.lanes.values()))
        return sum(counts)

    @property
    def recorded(self) -> int:
        """Entries written since start, over every stream."""
        return self.main.recorded + sum(lane.recorded for lane in self.lanes.values())

    async def backlog(self) -> dict[str, int]:
        """Entries not yet recorded, per stream."""
        out = await self.main.backlog()
        for lane in self.lanes.values():
            out.update(await lane.backlog())
        return out


def open_recorder(
    redis: str | aioredis.Redis | None = None,
    *,
    db: Database,
    settings: Settings | None = None,
    **options: Any,
) -> Recorder | RecorderLanes:
    """The history recorder for ``redis``: a :class:`Recorder`, or on a Redis Cluster (a cluster client
    or a ``redis+cluster://`` URL) :class:`RecorderLanes`."""
    s = settings or get_settings()
    main = Recorder(redis, db=db, settings=s, **options)
    if not on_cluster(main.redis, s):
        return main

    def lane(queue: str) -> Recorder:
        return LaneRecorder(main.redis, db=db, settings=s, queue=queue, **options)

    return RecorderLanes(main, lane, s)
