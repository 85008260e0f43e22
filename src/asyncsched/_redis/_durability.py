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

__all__ = ["durability_warnings", "warn_if_redis_may_lose_data"]

log = logging.getLogger("asyncsched.redis")


async def durability_warnings(client: aioredis.Redis) -> list[str]:
    """What in this Redis' configuration may lose acknowledged data (empty: nothing known)."""
    memory: dict[str, Any] = await client.info("memory")
    persistence: dict[str, Any] = await client.info("persistence")
    out: list[str] = []
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if int(memory.get("maxmemory", 0) or 0) > 0 and policy != "noeviction":
        out.append(
            f"maxmemory-policy is {policy}: when memory is full Redis deletes keys, queued jobs included; "
            "use maxmemory-policy noeviction (writes then fail loudly instead)"
        )
    save: str | None = None
    try:
        save = str((await client.config_get("save")).get("save", ""))
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
