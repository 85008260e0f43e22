"""The LifecyclePublisher on a Redis Cluster: one publisher per lifecycle stream (:mod:`asyncsched._lanes`),
all through the main one's bus. :func:`open_publisher` gives a plain publisher on a single node."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from .._lanes import Lanes, on_cluster
from ..config import Settings, get_settings
from ._bus import EventBus
from ._lifecycle import LifecyclePublisher

__all__ = ["PublisherLanes", "open_publisher"]


class PublisherLanes(Lanes[LifecyclePublisher]):
    """A publisher of the scheduler's lifecycle stream and one per queue's (:mod:`asyncsched._lanes`), all
    through the main one's bus. Made by :func:`open_publisher`."""

    def client(self) -> aioredis.Redis:
        return self.main.bus.redis

    @property
    def published(self) -> int:
        """Events published so far, over every stream."""
        return self.main.published + sum(lane.published for lane in self.lanes.values())


def open_publisher(
    redis: str | aioredis.Redis | None = None,
    *,
    settings: Settings | None = None,
    bus: EventBus | None = None,
    **options: Any,
) -> LifecyclePublisher | PublisherLanes:
    """The lifecycle event publisher for ``redis``: a :class:`LifecyclePublisher`, or on a Redis Cluster
    :class:`PublisherLanes`."""
    s = settings or (bus.settings if bus is not None else get_settings())
    main = LifecyclePublisher(redis, settings=s, bus=bus, **options)
    if not on_cluster(bus.redis if bus is not None else redis, s):
        return main

    def lane(queue: str) -> LifecyclePublisher:
        return LifecyclePublisher(redis, settings=s, bus=main.bus, queue=queue, **options)

    return PublisherLanes(main, lane, s)
