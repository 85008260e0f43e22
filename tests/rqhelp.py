"""Helpers for tests that drive the real ``rq`` package against our keys."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis as syncredis


def sync_redis(url: str) -> syncredis.Redis:
    """A sync client (what rq needs) on the same server as ``url``, memory:// included."""
    if url.startswith("memory://"):
        import fakeredis

        from asyncsched._redis.connection import _memory_server

        parts = urlsplit(url)
        return fakeredis.FakeRedis(server=_memory_server(parts.netloc + parts.path or "default"))
    return syncredis.Redis.from_url(url)


def rq_payload(data: bytes) -> bytes:
    """A job hash's ``data`` as RQ reads it (``Job.restore``): a zlib stream decompressed, anything else as
    it is (asyncsched stores small payloads uncompressed: ``codec.pack_data``)."""
    import zlib

    try:
        return zlib.decompress(data)
    except zlib.error:
        return data
