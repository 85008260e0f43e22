"""Redis Sentinel: every connection finds the master through the Sentinels, and moves after a failover.

redis-py's ``SentinelManagedConnection`` discovers the master in its ``connect()``; since redis-py 6 a
connection that is written to while disconnected connects through a lower-level path that skips it and
dials the bare default host (``localhost:6379``). :class:`SentinelConnection` always connects through
discovery, so connections made outside the pool (:class:`~asyncsched._redis.connection.Line`) and
reconnections after an error find the master too.

A failover leaves live connections on the old master: a worker blocked in ``BLMOVE``, a pub/sub reader,
a ``Line`` all keep talking to it until it is demoted (Sentinel reconfigures it ~10 s later, or never if
it stays unreachable). :class:`SentinelPool` asks the Sentinels for the master every second while it has
connections and closes the sockets of those connected elsewhere: their next read or write fails with a
connection error, which the clients' retry policy turns into a reconnection through discovery.

A master refusing writes for lack of replicas (``NOREPLICAS``, with ``min-replicas-to-write`` set, the
Redis setting that keeps a demoted master from acknowledging writes a failover then discards) is treated
as redis-py treats ``READONLY``: the connection is dropped and the command retried on a reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["SentinelConnection", "SentinelPool"]

#: how often a pool with connections asks the Sentinels where the master is
WATCH_INTERVAL = 1.0


class SentinelConnection(SentinelManagedConnection):
    """A connection to the master of a Sentinel service, found through the Sentinels on every connect."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]  # discovery; redis-py >= 6 dials localhost
        await super().send_packed_command(command, check_health)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            if str(exc).startswith("NOREPLICAS") and self.connection_pool.is_master:
                await self.disconnect()
                raise RedisConnectionError(f"the master refuses writes ({exc}); finding the master") from exc
            raise


class SentinelPool(SentinelConnectionPool):
    """The master's connection pool; tracks every connection it makes (pooled or not) and moves them to the
    new master after a failover (see the module docs)."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        kwargs.setdefault("connection_class", SentinelConnection)
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._made: weakref.WeakSet[Any] = weakref.WeakSet()
        self._watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
            weakref.WeakKeyDictionary()
        )

    def make_connection(self) -> Any:
        conn = super().make_connection()  # type: ignore[no-untyped-call]
        self._made.add(conn)
        self._watch()
        return conn

    async def get_master_address(self) -> Any:
        address = await super().get_master_address()  # type: ignore[no-untyped-call]
        host, port = address[0], int(address[1])
        for conn in list(self._made):
            writer = getattr(conn, "_writer", None)
            if writer is not None and (conn.host, int(conn.port)) != (host, port):
                # in use or not, in the pool or a Line: its next read or write fails and reconnects
                writer.transport.abort()
        return address

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the client is closing: stop watching, close the Sentinel clients
            for task in list(self._watchers.values()):
                task.cancel()
            self._watchers.clear()
            for client in self.sentinel_manager.sentinels:  # this pool's alone (one Sentinel per URL)
                await client.aclose()

    def _watch(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - connections are made inside the loop
            return
        task = self._watchers.get(loop)
        if task is None or task.done():
            self._watchers[loop] = loop.create_task(_watch(weakref.ref(self)), name="asyncsched-sentinel")


async def _watch(ref: weakref.ref[SentinelPool]) -> None:
    """Ask the Sentinels for the master every :data:`WATCH_INTERVAL` while the pool lives."""
    while True:
        await asyncio.sleep(WATCH_INTERVAL)
        pool = ref()
        if pool is None:
            return
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
            await pool.get_master_address()
        del pool
