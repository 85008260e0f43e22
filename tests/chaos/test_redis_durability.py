"""Start-up warnings for a production Redis that may lose acknowledged jobs (evicting policy, no
persistence), from the library call and from a real ``asyncsched worker`` process."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from asyncsched._redis import create_redis
from asyncsched._redis._durability import warn_if_redis_may_lose_data
from asyncsched.config import Settings
from asyncsched.exceptions import ConfigurationError
from tests.servers import ClusterSetup, RedisServer

from . import procs

pytestmark = pytest.mark.slow


async def test_risky_settings_are_named_once_each(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = create_redis(own_redis.url)
    try:
        production = Settings(redis_url=own_redis.url, env="production")
        with caplog.at_level(logging.WARNING, logger="asyncsched.redis"):
            warnings = await warn_if_redis_may_lose_data(client, production, "worker")
        assert len(warnings) == 1
        assert "persistence is off" in warnings[0]  # the test server runs with --save '' --appendonly no
        assert [r.getMessage() for r in caplog.records] == [
            f"worker: production Redis may lose data: {warnings[0]} (docs/fault-tolerance.md)"
        ]
        await client.config_set("maxmemory", "100mb")
        await client.config_set("maxmemory-policy", "allkeys-lru")
        warnings = await warn_if_redis_may_lose_data(client, production, "worker")
        assert len(warnings) == 2
        assert "maxmemory-policy is allkeys-lru" in warnings[0]
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("appendonly", "yes")
        assert await warn_if_redis_may_lose_data(client, production, "worker") == []
        await client.config_set("appendonly", "no")
        await client.config_set("save", "3600 1")
        assert "only RDB snapshots" in (await warn_if_redis_may_lose_data(client, production, "worker"))[0]
        # not production: nothing is said
        assert await warn_if_redis_may_lose_data(client, Settings(redis_url=own_redis.url), "worker") == []
    finally:
        await client.aclose()


def test_what_counts_as_production() -> None:
    assert Settings(env="production").production
    assert not Settings(env="development", redis_url="redis://h", database_url="postgresql://x/y").production
    assert Settings(redis_url="redis://h", database_url="postgresql+asyncpg://x/y").production
    assert not Settings(redis_url="redis://h").production  # SQLite: a single-box setup
    assert not Settings().production
    with pytest.raises(ConfigurationError, match="ASYNCSCHED_ENV"):
        Settings(env="prod")
    assert Settings.from_env({"ASYNCSCHED_LIFECYCLE_MAXLEN": "5000"}).lifecycle_maxlen == 5000
    with pytest.raises(ConfigurationError, match="lifecycle_maxlen"):
        Settings(lifecycle_maxlen=0)


async def test_worker_process_warns_at_start(own_redis: RedisServer, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    args = ["--redis-url", own_redis.url, "--log-level", "WARNING", "worker", "--burst"]
    proc = procs.Proc(args, log, env={"ASYNCSCHED_ENV": "production"})
    try:
        assert await asyncio.to_thread(proc.wait, 60) == 0, proc.log()
    finally:
        proc.stop()
    assert proc.log().count("production Redis may lose data: persistence is off") == 1


async def test_info_reports_lost_history(own_redis: RedisServer, tmp_path: Path) -> None:
    from asyncsched import _keys

    client = create_redis(own_redis.url)
    try:
        await client.hset(
            _keys.lifecycle_ledger("rq"), mapping={"lost": 12, "last_loss_at": 1_800_000_000_000}
        )
    finally:
        await client.aclose()
    log = tmp_path / "info.log"
    db = f"sqlite+aiosqlite:///{tmp_path}/info.db"
    proc = procs.Proc(["--redis-url", own_redis.url, "--database-url", db, "info"], log)
    try:
        assert await asyncio.to_thread(proc.wait, 60) == 0, proc.log()
    finally:
        proc.stop()
    assert "history:  12 lifecycle records lost (latest loss at 2027-01-15T08:00:00+00:00)" in proc.log()


@pytest.mark.cluster
async def test_every_master_of_a_cluster_is_checked(
    real_cluster: ClusterSetup, cluster_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # each master has its own configuration: one node's answer says nothing of the others
    client = create_redis(cluster_url)
    try:
        production = Settings(redis_url=cluster_url, env="production")
        with caplog.at_level(logging.WARNING, logger="asyncsched.redis"):
            warnings = await warn_if_redis_may_lose_data(client, production, "worker")
        masters = real_cluster.masters()
        assert len(warnings) == len(masters) == 3  # the test nodes run with --save '' --appendonly no
        for port in masters:
            assert len([w for w in warnings if f"127.0.0.1:{port}: persistence is off" in w]) == 1
    finally:
        await client.aclose()
