"""Redis Cluster URLs and the cluster test rig (the suites run on it through the ``cluster`` marker)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import RedisCluster

from asyncsched import UnsupportedURL
from asyncsched._redis import create_redis, is_client, is_cluster
from asyncsched._redis.cluster import parse
from asyncsched._redis.connection import create_sync_redis

from .servers import ClusterSetup


def test_cluster_urls_name_nodes_credentials_and_tls() -> None:
    spec = parse("redis+cluster://app:s%40cret@10.0.0.1:7000,[::1]:7001,node3/0")
    assert spec.nodes == [("10.0.0.1", 7000), ("::1", 7001), ("node3", 6379)]
    assert (spec.username, spec.password, spec.tls) == ("app", "s@cret", False)
    assert parse("rediss+cluster://:pw@h:1").client_options() == {
        "username": None,
        "password": "pw",
        "ssl": True,
    }


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://", "no node given"),
        ("redis+cluster://h:1/3", "database 0 only"),
        ("redis+cluster://h:x", "not a number"),
        ("redis+cluster://h:70000", "out of range"),
        ("redis+cluster://h:1,:2", "empty host"),
        ("redis+cluster://h:1?read_from_replicas=yes", "no query options"),
    ],
)
def test_bad_cluster_urls_say_what_is_wrong(url: str, why: str) -> None:
    with pytest.raises(UnsupportedURL, match=why):
        create_redis(url)


def test_bad_cluster_url_never_shows_the_password() -> None:
    with pytest.raises(UnsupportedURL) as info:
        create_redis("redis+cluster://:hunter2@h:1/9")
    assert "hunter2" not in str(info.value)


async def test_cluster_clients_follow_redirections(real_cluster: ClusterSetup, cluster_url: str) -> None:
    client = create_redis(cluster_url)
    assert is_client(client)
    assert is_cluster(client)
    assert isinstance(client, RedisCluster)
    keys = [f"k{n}" for n in range(50)]  # spread over the three masters
    for key in keys:
        await client.set(key, key)
    assert [await client.get(k) for k in keys] == [k.encode() for k in keys]
    await client.aclose()
    sync = create_sync_redis(cluster_url)
    assert is_cluster(sync)
    assert sync.get("k7") == b"k7"
    sync.close()


def test_plain_clients_are_not_cluster_clients() -> None:
    assert not is_cluster(create_redis("memory://plain"))
    assert not is_client("redis://h:1/0")


async def test_a_new_cluster_client_takes_a_burst_of_concurrent_commands(cluster_url: str) -> None:
    """redis-py's cluster client, used by many tasks at once before it knows the cluster, handed one new
    connection to two of them (AttributeError on a closed writer, ~1 burst in 10). A new client per round."""
    for _round in range(25):
        client = create_redis(cluster_url)
        try:
            results = await asyncio.gather(
                *(client.set(f"burst:{i}", i) for i in range(80)), return_exceptions=True
            )
        finally:
            await client.aclose()
        assert [r for r in results if isinstance(r, BaseException)] == []
