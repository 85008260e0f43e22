"""Redis Cluster URLs: ``redis+cluster://[[user]:password@]host:port[,host:port...][/0]`` (``rediss+cluster://``
for TLS).

The hosts are startup nodes: any reachable one is enough, redis-py's cluster client discovers the others
(``CLUSTER SLOTS``) and follows ``MOVED``/``ASK`` redirections and failovers itself. A cluster has one
database, so the path is empty or ``/0``. No query options are read (a URL with one is refused rather than
half understood).

The key layout changes in cluster mode (hash tags per queue; see :mod:`asyncsched.rq.keys` and
``docs/rq-compat.md``): components ask :func:`is_cluster` of their client which layout to use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode as SyncClusterNode
from redis.cluster import RedisCluster as SyncRedisCluster

from ..exceptions import UnsupportedURL
from ._urls import mask_url

__all__ = ["CLUSTER_SCHEMES", "ClusterURL", "create_cluster", "create_sync_cluster", "is_cluster", "parse"]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass(frozen=True)
class ClusterURL:
    """What a cluster URL says: startup nodes, credentials, TLS."""

    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments common to redis-py's async and sync cluster clients."""
        options: dict[str, Any] = {"username": self.username, "password": self.password}
        if self.tls:
            options["ssl"] = True
        return options


def _bad(url: str, why: str) -> UnsupportedURL:
    return UnsupportedURL(f"bad Redis Cluster URL {mask_url(url)}: {why}")


def parse(url: str) -> ClusterURL:
    """Parse a ``redis(s)+cluster://`` URL; :class:`UnsupportedURL` says what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in CLUSTER_SCHEMES:
        raise _bad(url, f"scheme {scheme!r} is not one of " + ", ".join(f"{s}://" for s in CLUSTER_SCHEMES))
    if parts.query or parts.fragment:
        raise _bad(url, "no query options or fragment are read; remove them")
    if parts.path.strip("/") not in ("", "0"):
        raise _bad(url, f"a cluster has database 0 only, not {parts.path.strip('/')!r}")
    hosts = parts.netloc.rsplit("@", 1)[-1]
    if not hosts:
        raise _bad(url, "no node given (host:port[,host:port...])")
    nodes = [_node(url, item) for item in hosts.split(",")]
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    user, _, password = userinfo.partition(":")
    return ClusterURL(
        nodes,
        username=unquote(user) or None,
        password=unquote(password) or None,
        tls=scheme == "rediss+cluster",
    )


def _node(url: str, item: str) -> tuple[str, int]:
    host, sep, port = item.strip().rpartition(":")
    if not sep or host.endswith(":"):  # no port, or a bare IPv6 address
        host, port = item.strip(), "6379"
    host = host.strip("[]")
    if not host:
        raise _bad(url, f"empty host in {item!r}")
    try:
        number = int(port)
    except ValueError:
        raise _bad(url, f"port {port!r} of {host!r} is not a number") from None
    if not 0 < number < 65536:
        raise _bad(url, f"port {number} of {host!r} is out of range")
    return host, number


class _Cluster(AsyncRedisCluster):
    """redis-py's asyncio ``RedisCluster`` that learns the cluster before its first command runs.

    redis-py 8 resolves a command's routing policy before it initializes the client; many tasks using a new
    client at once then race on its first connections, and one may find its connection closed under it
    (``AttributeError: 'NoneType' object has no attribute 'writelines'``). Initializing first, under the
    client's own lock, leaves nothing to race on. Once initialized this is one attribute test per command.
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            _ = await self.initialize()
        return await super().execute_command(*args, **kwargs)


def create_cluster(url: str, **options: Any) -> aioredis.Redis:
    """An asyncio ``RedisCluster`` for ``url`` (typed as the ``Redis`` it stands in for: it answers the same
    commands, routed by key slot). Does not connect until first used."""
    spec = parse(url)
    options = {**spec.client_options(), **options}
    options.pop("timeout", None)  # a single server pool's wait for a free connection; no cluster equivalent
    options.pop("health_check_interval", None)
    # past max_connections to one node the cluster client raises at once instead of waiting for a free one
    # (see _WaitingPool for a single server): a high ceiling per node
    options.setdefault("max_connections", 1000)
    nodes = [ClusterNode(host, port) for host, port in spec.nodes]
    return cast(aioredis.Redis, _Cluster(startup_nodes=nodes, **options))


def create_sync_cluster(url: str) -> redis.Redis:
    """A synchronous ``RedisCluster`` for ``url`` (what RQ's own code gets inside a job)."""
    spec = parse(url)
    nodes = [SyncClusterNode(host, port) for host, port in spec.nodes]  # type: ignore[no-untyped-call]
    return cast(redis.Redis, SyncRedisCluster(startup_nodes=nodes, **spec.client_options()))


def is_cluster(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster (keys then use the cluster layout)."""
    return isinstance(client, (AsyncRedisCluster, SyncRedisCluster))


async def pubsub_of(client: aioredis.Redis) -> PubSub:
    """``client.pubsub()``, after a cluster client learned the slots (its pub/sub picks a node by slot and
    fails on an empty slot table; classic pub/sub reaches every node of a cluster from any one)."""
    if is_cluster(client):
        await cast(Any, client).initialize()
    return client.pubsub()
