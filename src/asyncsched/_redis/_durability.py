"""Start-up check of a production Redis: settings under which it may lose acknowledged jobs.

Redis holds every queued and running job and the lifecycle records not yet in SQL. Two settings make it
lose them without an error: an evicting ``maxmemory-policy`` (keys deleted when memory is full) and no
persistence at all (no AOF, no RDB snapshots: a restart comes back empty). asyncsched detects and
reports such a loss after the fact (docs/fault-tolerance.md); this check says so before it happens.

It runs when the deployment says it is production (:attr:`asyncsched.config.Settings.production`:
``ASYNCSCHED_ENV=production``, or a real Redis with a PostgreSQL database). A Redis that refuses
``CONFIG GET`` (managed services) is judged on what ``INFO`` shows.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..config import Settings
from .cluster import is_cluster

__all__ = ["durability_warnings", "warn_if_redis_may_lose_data"]

log = logging.getLogger("asyncsched.redis")


async def durability_warnings(client: aioredis.Redis) -> list[str]:
    """What in this Redis' configuration may lose acknowledged data (empty: nothing known). On a Redis
    Cluster every master is asked (each has its own configuration), each warning starting with its
    ``host:port``."""
    if not is_cluster(client):
        return await _warnings(client, None)
    cluster: Any = client
    if cluster._initialize:  # the masters are known before the first command
        await cluster.initialize()
    out: list[str] = []
    for node in cluster.get_primaries():
        out += [f"{node.name}: {w}" for w in await _warnings(client, node)]
    return out


async def _ask(client: aioredis.Redis, node: Any, command: str, arg: str) -> dict[str, Any]:
    """``INFO <arg>`` or ``CONFIG GET <arg>`` of the client's server, or of cluster master ``node``."""
    if node is None:
        return dict(await getattr(client, command)(arg))
    reply = await getattr(client, command)(arg, target_nodes=node)
    return dict(reply.get(node.name, reply))  # (redis-py may key a node's answer by its name)


async def _warnings(client: aioredis.Redis, node: Any) -> list[str]:
    """The warnings of one server (``node``: a cluster master, ``None``: the client's only server)."""
    memory = await _ask(client, node, "info", "memory")
    persistence = await _ask(client, node, "info", "persistence")
    out: list[str] = []
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if int(memory.get("maxmemory", 0) or 0) > 0 and policy != "noeviction":
        out.append(
            f"maxmemory-policy is {policy}: when memory is full Redis deletes keys, queued jobs included; "
            "use maxmemory-policy noeviction (writes then fail loudly instead)"
        )
    save: str | None = None
    try:
        save = str((await _ask(client, node, "config_get", "save")).get("save", ""))
    except RedisError:
        save = None  # CONFIG refused: judged on INFO only
    aof = str(persistence.get("aof_enabled", "0")) == "1"
    if not aof and save == "":
        out.append(
            "persistence is off (appendonly no, no save points): a restart loses every queued and running "
            "job; use appendonly yes (appendfsync everysec)"
        )
    elif not aof and save is not None:
        out.append(
            f"only RDB snapshots (save {save!r}): a crash loses the jobs acknowledged since the last "
            "snapshot; use appendonly yes (appendfsync everysec)"
        )
    return out


async def warn_if_redis_may_lose_data(
    client: aioredis.Redis, settings: Settings, component: str
) -> list[str]:
    """Log one warning per risky setting when ``settings.production``; returns the warnings."""
    if not settings.production:
        return []
    try:
        warnings = await durability_warnings(client)
    except RedisError as exc:
        log.debug("could not read the Redis configuration: %s", exc)
        return []
    for warning in warnings:
        log.warning("%s: production Redis may lose data: %s (docs/fault-tolerance.md)", component, warning)
    return warnings
