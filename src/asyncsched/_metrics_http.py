"""The tiny HTTP server of ``--metrics-port`` (``asyncsched worker``, ``asyncsched scheduler``):
``GET /metrics`` answered with the exposition text, anything else 404; no framework, one short-lived
connection a scrape."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["CONTENT_TYPE", "serve"]

log = logging.getLogger("asyncsched.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def serve(host: str, port: int, render: Callable[[], Awaitable[str]]) -> asyncio.Server:
    """Serve ``GET /metrics`` (any other path: 404) on ``host:port`` until the returned server closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                body, status, kind = (await render()).encode(), "200 OK", CONTENT_TYPE
            else:
                body, status, kind = b"not found: try /metrics\n", "404 Not Found", "text/plain"
            head = f"HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {len(body)}\r\n"
            writer.write(head.encode() + b"connection: close\r\n\r\n" + body)
            await writer.drain()
        except Exception as exc:
            log.debug("metrics request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.start_server(answer, host, port)
