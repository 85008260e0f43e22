"""One factory turning a URL into a ``redis.asyncio.Redis`` client.

Schemes:

* ``memory://`` or ``memory://NAME`` — an in-process fakeredis server (Lua enabled). Every client built for
  the same NAME in this process talks to the same server, on whichever event loop it is used from, so the
  worker, scheduler, bus and sync facade of one process share state. Nothing crosses process boundaries.
* ``redis://``, ``rediss://`` (TLS), ``unix://`` — redis-py's own URL parsing (hiredis when installed).
* ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`` — the master of a Sentinel service,
  followed through failovers (see :mod:`asyncsched._redis.sentinel`).
* ``redis+cluster://[[user]:password@]host:port[,host:port...]`` (``rediss+cluster://`` for TLS) — a Redis
  Cluster through redis-py's cluster client, which follows MOVED/ASK and failovers (see
  :mod:`asyncsched._redis.cluster`; keys then use the cluster layout of :mod:`asyncsched.rq.keys`).

The clients return ``bytes`` (``decode_responses=False``), as python-rq expects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from hiredis import pack_command as _hiredis_pack
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:  # redis-py >= 8
    from redis.driver_info import DriverInfo as _DriverInfo
except ImportError:  # pragma: no cover - older redis-py fixes the version once, at import
    _DriverInfo = None  # type: ignore[assignment,misc]

from ..exceptions import BackendUnavailable, UnsupportedURL
from ._line import Line
from ._urls import mask_url
from .cluster import CLUSTER_SCHEMES, create_cluster, create_sync_cluster, is_cluster
from .sentinel import SentinelPool

if TYPE_CHECKING:
    from typing_extensions import TypeIs

__all__ = [
    "Line",
    "check_redis",
    "create_redis",
    "create_sync_redis",
    "is_client",
    "is_cluster",
    "mask_url",
    "reset_memory_servers",
]

_SCHEMES = ("memory", "redis", "rediss", "unix", "redis+sentinel", *CLUSTER_SCHEMES)
_memory_servers: dict[str, Any] = {}
_memory_lock = threading.Lock()


def _memory_server(name: str) -> Any:
    import fakeredis

    with _memory_lock:
        server = _memory_servers.get(name)
        if server is None:
            server = fakeredis.FakeServer(version=(7, 2))
            _memory_servers[name] = server
        return server


def reset_memory_servers() -> None:
    """Forget every ``memory://`` server of this process (tests use it to start from empty)."""
    with _memory_lock:
        _memory_servers.clear()


def create_redis(url: str, **options: Any) -> aioredis.Redis:
    """A new ``redis.asyncio.Redis`` client for ``url``. Does not connect until first used.

    ``options`` go to redis-py (e.g. ``max_connections``, ``socket_timeout``; for TCP/TLS/unix URLs the
    pool holds up to 100 connections by default and ``timeout`` is how long a command may wait for a free
    one, 20 s by default).
    Raises :class:`~asyncsched.exceptions.UnsupportedURL` for a scheme we do not serve.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        import fakeredis

        name = urlsplit(url).netloc + urlsplit(url).path or "default"
        options.setdefault("max_connections", 100_000)  # in-process connections: no reason to refuse one
        client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=_memory_server(name), **options)
        return client
    if scheme in ("redis", "rediss", "unix"):
        _driver_info(options)
        options.setdefault("health_check_interval", 30)
        options.setdefault("retry", _reconnect_retry())
        # redis-py's default pool raises MaxConnectionsError once 100 commands are in flight; ours makes
        # the 101st wait for a free connection (up to ``timeout`` seconds) instead
        options.setdefault("max_connections", 100)
        options.setdefault("timeout", 20)
        pool = _WaitingPool.from_url(url, **options)
        return _fast_packing(aioredis.Redis.from_pool(pool))
    if scheme == "redis+sentinel":
        _driver_info(options)
        options.setdefault("retry", _reconnect_retry())
        options.setdefault("max_connections", 100)
        options.setdefault("timeout", 20)
        return _fast_packing(_sentinel_master(url, **options))
    if scheme in CLUSTER_SCHEMES:
        _driver_info(options)  # retries: redis-py's cluster policy (it re-reads the slots on errors)
        return create_cluster(url, **options)
    raise UnsupportedURL(
        f"unsupported Redis URL scheme {scheme!r} in {mask_url(url)}; use one of: "
        + ", ".join(f"{s}://" for s in _SCHEMES)
    )


def create_sync_redis(url: str) -> redis.Redis:
    """A synchronous ``redis.Redis`` on the same server as ``create_redis(url)`` (the connection RQ's own
    code gets: job callbacks, ``rq.get_current_job().connection``); ``memory://`` included."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        import fakeredis

        name = parts.netloc + parts.path or "default"
        client: redis.Redis = fakeredis.FakeRedis(server=_memory_server(name))
        return client
    if scheme == "redis+sentinel":
        from redis.sentinel import Sentinel as SyncSentinel

        hosts, service, options = _sentinel_parts(url, {})
        kwargs = {"password": options.get("password")}
        sentinel = SyncSentinel(hosts, sentinel_kwargs=kwargs, **options)  # type: ignore[no-untyped-call]
        master: redis.Redis = sentinel.master_for(service)  # type: ignore[no-untyped-call]
        return master
    if scheme in ("redis", "rediss", "unix"):
        return redis.Redis.from_url(url)
    if scheme in CLUSTER_SCHEMES:
        return create_sync_cluster(url)
    raise UnsupportedURL(f"unsupported Redis URL scheme {scheme!r} in {mask_url(url)}")


def is_client(value: object) -> TypeIs[aioredis.Redis]:
    """Whether ``value`` is an asyncio Redis client (single server or cluster) rather than a URL."""
    return isinstance(value, aioredis.Redis) or is_cluster(value)


def _driver_info(options: dict[str, Any]) -> None:
    """Give redis-py its own name and version for ``CLIENT SETINFO`` up front.

    Left to itself, redis-py >= 8 looks its version up with ``importlib.metadata`` for every new connection:
    ~0.4 ms of file-system reads, blocking the event loop each time a pool grows.
    """
    if _DriverInfo is not None and "driver_info" not in options:
        options["driver_info"] = _DriverInfo(name="redis-py", lib_version=redis.__version__)


def _fast_packing(client: aioredis.Redis) -> aioredis.Redis:
    """Make ``client`` build commands with hiredis' C packer (hiredis is a dependency: ``redis[hiredis]``).

    redis-py's asyncio connections pack every command in pure Python (its sync client already uses
    hiredis): for a 1,000-job enqueue script call that was a third of the producer's CPU. Applied before
    the first connection is made, on whichever connection class the URL chose (TCP, TLS, unix, Sentinel).
    """
    pool = client.connection_pool
    encoder = pool.connection_kwargs.get("encoding", "utf-8"), pool.connection_kwargs.get("encoding_errors")
    if encoder[0].lower().replace("-", "") != "utf8" or encoder[1] not in (None, "strict"):
        return client  # hiredis encodes text as strict UTF-8 only
    base = pool.connection_class
    if not issubclass(base, _HiredisPacking):
        pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
    return client


class _HiredisPacking:
    """Mixin over a redis-py asyncio connection class: ``pack_command`` in C (same bytes as redis-py's)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # as redis-py: a command name with spaces ("SCRIPT LOAD") is sent as separate words
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [_hiredis_pack(args)]
        except TypeError:  # memoryview, bool, None, ...: redis-py's packer converts or raises DataError
            return super().pack_command(*args)  # type: ignore[misc,no-any-return]


class _WaitingPool(aioredis.ConnectionPool):
    """redis-py's connection pool, except that a command finding all ``max_connections`` in use waits for
    one to be released (up to ``timeout`` seconds, then ``ConnectionError``) instead of raising
    ``MaxConnectionsError``. With a connection free, the path is redis-py's own: its
    ``BlockingConnectionPool`` would make every command take a condition variable and a timer (~20% of
    the rate of 100 concurrent publishes, W5)."""

    def __init__(self, *args: Any, timeout: float = 20.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wait_timeout = timeout
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def _full(self) -> bool:
        return not self._available_connections and len(self._in_use_connections) >= self.max_connections

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._full():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._wait_timeout
            while self._full():
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append(waiter)
                try:
                    async with asyncio.timeout_at(deadline):
                        await waiter
                except BaseException as exc:
                    if waiter.done() and not waiter.cancelled():
                        self._wake_one()  # woken, but leaving (cancelled): pass the turn on
                    else:
                        with contextlib.suppress(ValueError):
                            self._waiters.remove(waiter)
                    if isinstance(exc, TimeoutError):
                        raise RedisConnectionError(
                            f"no free Redis connection within {self._wait_timeout:g} s "
                            f"({self.max_connections} in use; raise max_connections?)"
                        ) from None
                    raise
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class _WaitingSentinelPool(_WaitingPool, SentinelPool):
    """The Sentinel master's pool, waiting for a free connection as :class:`_WaitingPool` does (during a
    failover many commands are in flight at once; redis-py's pool would raise ``MaxConnectionsError``)."""


def _reconnect_retry() -> Retry:
    """Retry a command whose connection was lost, after reconnecting: twice, 50 ms then 100 ms.

    After a Redis restart every pooled connection is dead and fails its next command once ("Connection
    closed by server"); without this the first call of every producer after a restart raised. Only
    connection errors are retried, never timeouts: a command that timed out may have run, and re-running a
    non-idempotent script (enqueue, claim) could do its work twice. A connection that broke mid-reply is the
    rare case where a retry can repeat a command; the scripts are written so that a repeat is harmless
    (fresh job ids are idempotent, claims re-check status).
    """
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), 2, supported_errors=(RedisConnectionError,))


def _sentinel_master(url: str, **options: Any) -> aioredis.Redis:
    hosts, service, options = _sentinel_parts(url, options)
    sentinel_kwargs = {"password": options.get("password")}
    if "driver_info" in options:
        sentinel_kwargs["driver_info"] = options["driver_info"]
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **options)  # type: ignore[no-untyped-call]
    master: aioredis.Redis = sentinel.master_for(service, connection_pool_class=_WaitingSentinelPool)
    return master


def _sentinel_parts(url: str, options: dict[str, Any]) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """The Sentinels' addresses, the service name and the connection options of a Sentinel URL."""
    parts = urlsplit(url)
    hosts_part = parts.netloc.rsplit("@", 1)[-1]
    hosts: list[tuple[str, int]] = []
    for item in hosts_part.split(","):
        host, _, port = item.rpartition(":")
        if not host:
            host, port = item, "26379"
        hosts.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise UnsupportedURL(f"Sentinel URL needs a service name: {mask_url(url)} (…/service[/db])")
    service = path[0]
    if len(path) > 1:
        options["db"] = int(path[1])
    if parts.password:
        options["password"] = unquote(parts.password)
    return hosts, service, options


def describe(url: str) -> str:
    """Where ``url`` points, for messages: ``host:port`` (or the socket path), password never shown."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    if parts.scheme == "memory":
        return "in-process memory server"
    return parts.netloc.rsplit("@", 1)[-1] or "localhost:6379"


async def check_redis(client: aioredis.Redis, url: str) -> None:
    """PING ``client``; turn any connection failure into one clear :class:`BackendUnavailable` line."""
    try:
        await client.ping()
    except AuthenticationError as exc:
        raise BackendUnavailable(
            f"Redis at {describe(url)} refused the credentials in {mask_url(url)}: {exc}"
        ) from None
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise BackendUnavailable(
            f"cannot reach Redis at {describe(url)} ({mask_url(url)}): {str(exc).rstrip('.')}. "
            "Is redis-server running? Set REDIS_URL, or use memory:// for the embedded server."
        ) from None
