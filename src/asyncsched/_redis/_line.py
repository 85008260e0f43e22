"""A Redis connection of its own for one caller on a hot path: :class:`Line`."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Line"]


class Line:
    """A connection of its own for one caller on a hot path, which writes a command (or a few,
    pipelined) and reads their replies with nothing else in between.

    redis-py's client checks a connection out of its pool for every command, and with a socket timeout
    set (its default) writes it from a separate task: together ~30 µs p50 and ~100 µs p99 before the
    bytes leave, on an idle machine, on the enqueue→start path. A ``Line`` keeps one connection (made
    by the client's pool, so TLS, auth, db and Sentinel settings apply; not counted in the pool), writes
    to it at once and bounds the wait for replies itself.

    For real servers only (see :meth:`supported`); one caller at a time; bound to the event loop of its
    first call. Errors behave as the client's: a connection lost before or during the call is reconnected
    and the call retried under the client's own ``retry`` policy (``_reconnect_retry``); no reply within the
    client's socket timeout drops the connection and raises redis-py's ``TimeoutError`` (never retried:
    the commands may have run); after ``health_check_interval`` idle a PING goes first, as in the pool.
    A call cancelled while its replies are on their way keeps them: the
    caller may :meth:`collect` them (to learn what the commands did); otherwise the next call drops the
    connection and starts clean.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._pool: Any = client.connection_pool
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeout: float | None = None
        self._call_timeout: float | None = None
        self._replies: list[Any] = []
        self._unread = 0  # replies of the last call still to be read

    @staticmethod
    def supported(client: aioredis.Redis) -> bool:
        """Whether ``client`` can have a :class:`Line`: a redis-py client of a real server (not fakeredis)."""
        pool = getattr(client, "connection_pool", None)
        return hasattr(pool, "make_connection") and not type(client).__module__.startswith("fakeredis")

    async def execute(self, *commands: tuple[Any, ...], blocking: float = 0.0) -> list[Any]:
        """Send ``commands`` in one write and return their replies in order. An error reply is returned
        as its exception (``NoScriptError``, ``ResponseError``...), like ``pipeline(raise_on_error=False)``.
        ``blocking``: how long a blocking command among them may wait (added to the socket timeout)."""
        retry: Retry = self._connection().retry
        return await retry.call_with_retry(lambda: self._round_trip(commands, blocking), _dropped)

    async def collect(self) -> list[Any]:
        """The replies of the last call, after it was cancelled: those already read and those still to
        come (awaited, under the call's own time limit)."""
        if self._unread and self._conn is not None:
            await self._read(self._conn)
        return self._replies

    async def _round_trip(self, commands: tuple[tuple[Any, ...], ...], blocking: float) -> list[Any]:
        conn = self._connection()
        if self._unread:  # an interrupted call's replies were never collected: start clean
            self._unread = 0
            await conn.disconnect(nowait=True)
        self._replies = []
        self._call_timeout = None if self._timeout is None else self._timeout + blocking
        packed = conn.pack_commands(commands)
        if conn.health_check_interval and asyncio.get_running_loop().time() > conn.next_health_check:
            # idle for a while (the pool's rule): PING first, so a connection that died silently is
            # replaced before the call rather than found dead by its timeout
            try:
                async with asyncio.timeout(self._timeout):
                    await conn.send_packed_command(packed, check_health=True)
            except TimeoutError:
                await _give_up(conn, self._timeout)
        else:
            await conn.send_packed_command(packed, check_health=False)
        self._unread = len(commands)
        await self._read(conn)
        return self._replies

    async def _read(self, conn: Any) -> None:
        try:
            async with asyncio.timeout(self._call_timeout):
                while self._unread:
                    try:
                        reply = await conn.read_response(disconnect_on_error=False)
                    except ResponseError as exc:
                        reply = exc
                    self._replies.append(reply)
                    self._unread -= 1
        except asyncio.CancelledError:
            raise  # the replies stay readable: see collect()
        except TimeoutError:
            self._unread = 0
            await _give_up(conn, self._call_timeout)
        except BaseException:
            self._unread = 0
            await conn.disconnect(nowait=True)
            raise

    def _connection(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._conn is None or self._loop is not loop:
            self._conn = conn = self._pool.make_connection()
            self._timeout = conn.socket_timeout  # the client's read timeout, applied by _read
            conn.socket_timeout = None
            self._loop = loop
            self._unread = 0
        return self._conn

    async def aclose(self) -> None:
        """Close the connection (the next call opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None and self._loop is asyncio.get_running_loop():
            await conn.disconnect()


async def _dropped(error: Exception) -> None:
    """A :class:`Line` call failed on a lost connection: redis-py has closed it; the retry reconnects."""


async def _give_up(conn: Any, seconds: float | None) -> NoReturn:
    """No reply in time: the connection is dropped (a late reply must never be read as the next call's)."""
    await conn.disconnect(nowait=True)
    raise RedisTimeoutError(f"no reply from Redis within {seconds:g} s") from None
