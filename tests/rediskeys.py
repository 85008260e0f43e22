"""Reading Redis in tests the same way on a single node and on a Redis Cluster: the keys come from the key
layer (``TaskQueue.keys``: RQ's names, or the cluster layout), never spelled as literals."""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis

from asyncsched._keys import lifecycle_stream
from asyncsched._lifecycle import LifecycleRecord
from asyncsched._redis import is_cluster
from asyncsched.rq.keys import RQKeys


async def all_keys(redis: aioredis.Redis, pattern: str = "*") -> set[str]:
    """Every key matching ``pattern``, on every master of a cluster (``KEYS`` reaches one node there)."""
    if not is_cluster(redis):
        return {k.decode() for k in await redis.keys(pattern)}
    client = cast(Any, redis)
    await client.initialize()
    out: set[str] = set()
    for node in client.get_primaries():
        found = await client.keys(pattern, target_nodes=node)
        out |= {k.decode() for k in (found.get(node.name, []) if isinstance(found, dict) else found)}
    return out


async def records(redis: aioredis.Redis, keys: RQKeys, *queues: str) -> list[LifecycleRecord]:
    """The lifecycle records of ``queues`` (default: ``default``): the one stream on a single node, each
    queue's on a cluster (in stream order, stream after stream)."""
    streams = dict.fromkeys(
        lifecycle_stream(keys.prefix, q, cluster=keys.cluster) for q in queues or ("default",)
    )
    return [LifecycleRecord.decode(f) for s in streams for _, f in await redis.xrange(s)]
