"""Readers of every queue's lifecycle stream on a Redis Cluster. There each queue appends to its own stream
(in its slot) beside the scheduler's, so a reader of lifecycle records (the Recorder, the
LifecyclePublisher) runs as one *lane* per stream: the main reader (the scheduler's stream, and what else
it reads) plus one per queue it finds: the configured queues and ``<p>:queues``, looked at again every
``discover_interval`` seconds (and when asked: :meth:`Lanes.discover`). Used on a cluster only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ._keys import lifecycle_stream
from ._redis import is_client, is_cluster
from ._redis.cluster import CLUSTER_SCHEMES
from .config import Settings
from .rq.keys import RQKeys

__all__ = ["Lanes", "cluster_queues", "group_lag", "lifecycle_streams", "on_cluster"]


class _Reader(Protocol):
    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


R = TypeVar("R", bound=_Reader)


def on_cluster(redis: str | aioredis.Redis | None, settings: Settings) -> bool:
    """Whether ``redis`` (a client, a URL or ``None``: ``settings.redis_url``) is a Redis Cluster."""
    target = redis if redis is not None else settings.redis_url
    if is_client(target):
        return is_cluster(target)
    return urlsplit(str(target)).scheme.lower() in CLUSTER_SCHEMES


class Lanes(Generic[R]):
    """``main`` and one reader per queue (``make(queue)``, the queue's name in Redis: ``{q}``); an async
    context manager entering and leaving them all."""

    def __init__(
        self, main: R, make: Callable[[str], R], settings: Settings, discover_interval: float = 5.0
    ) -> None:
        self.main, self.make, self.settings = main, make, settings
        self.keys = RQKeys(settings.key_prefix, cluster=True)
        self.discover_interval = discover_interval
        self.lanes: dict[str, R] = {}
        self._task: asyncio.Task[None] | None = None

    def client(self) -> aioredis.Redis:
        """The cluster client (the main reader's)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.main.__aenter__()
        with contextlib.suppress(Exception):  # Redis may be down: the discovery loop tries again
            await self.discover()
        self._task = asyncio.get_running_loop().create_task(self._discovering())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for lane in list(self.lanes.values()):
            await lane.__aexit__(exc_type, exc, tb)
        await self.main.__aexit__(exc_type, exc, tb)

    async def discover(self) -> list[str]:
        """Start a lane for every queue not read yet; returns the queues (names in Redis) it added."""
        names = await cluster_queues(self.client(), self.keys, self.settings.queues)
        added = sorted(names - set(self.lanes))
        for q in added:
            lane = self.make(q)
            await lane.__aenter__()
            self.lanes[q] = lane
        return added

    async def _discovering(self) -> None:
        while True:
            await asyncio.sleep(self.discover_interval)
            with contextlib.suppress(Exception):  # Redis away: next time
                await self.discover()


async def cluster_queues(redis: aioredis.Redis, keys: RQKeys, configured: Iterable[str] = ()) -> set[str]:
    """The queues of a cluster (their names in Redis, ``{q}``): ``configured`` and those of ``<p>:queues``."""
    names = {keys.name(q) for q in configured}
    return names | {keys.name(keys.queue_name(m)) for m in await redis.smembers(keys.queues)}


async def lifecycle_streams(redis: aioredis.Redis, prefix: str) -> list[str]:
    """The lifecycle streams the Recorder reads: the one stream, or on a Redis Cluster the scheduler's and
    one per queue of ``<p>:queues`` (each in its queue's slot)."""
    if not is_cluster(redis):
        return [lifecycle_stream(prefix)]
    queues = await cluster_queues(redis, RQKeys(prefix, cluster=True))
    return [lifecycle_stream(prefix, cluster=True)] + [
        lifecycle_stream(prefix, q, cluster=True) for q in sorted(queues)
    ]


async def group_lag(redis: aioredis.Redis, stream: str, group_name: str) -> int | None:
    """Entries of ``stream`` the group has not acknowledged (unread + pending); ``None``: no such group."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream yet
        return None
    for group in groups:
        name: bytes | str | None = group.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group_name:
            return int(group.get("lag") or 0) + int(group.get("pending") or 0)
    return None
