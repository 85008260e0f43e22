"""``GET /health``: whether Redis and the database answer, and whether history was lost lately."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response

from ._security import host_ok, token_ok
from ._serialize import ApiJSON
from ._services import Services

__all__ = ["health", "ping_db", "ping_redis"]


async def ping_redis(services: Services) -> bool:
    """Whether Redis answers a ``PING`` (raises what the client raises when it does not)."""
    client = await services.redis()
    return bool(await client.ping())


async def ping_db(services: Services) -> bool:
    """Whether the database answers ``SELECT 1`` (raises what the driver raises when it does not)."""
    db = await services.db()
    async with db.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return True


async def health(services: Services, request: Request) -> Response:
    """GET /health: Redis and the database reachable (503 when not); ``degraded`` after a recent loss of
    history. The reasons are shown only to a caller who may see them (token and host)."""

    settings = services.settings
    detail = token_ok(request, settings.api_token) and host_ok(
        request, settings.api_token, settings.allowed_hosts
    )
    report: dict[str, str] = {}
    for name, check in (("redis", ping_redis), ("database", ping_db)):
        try:
            await asyncio.wait_for(check(services), 5.0)
            report[name] = "ok"
        except Exception as exc:
            report[name] = f"unavailable: {type(exc).__name__}: {exc}" if detail else "unavailable"
    ok = all(v == "ok" for v in report.values())
    status = "ok" if ok else "unavailable"
    if report["redis"] == "ok":
        history = await _history_health(services)
        if history is not None:
            report["history"] = history
            status = "degraded" if ok else status
    return ApiJSON({"status": status, **report}, status_code=200 if ok else 503)


async def _history_health(services: Services) -> str | None:
    """A loss of history in the last hour (records dropped unread) makes the service degraded."""
    from ..store._history_loss import DEGRADED_FOR, history_loss

    try:
        client = await services.redis()
        loss = await asyncio.wait_for(history_loss(client, services.settings.key_prefix), 5.0)
    except Exception:
        return None
    if not loss.lost or loss.last_loss_at is None:
        return None
    if (datetime.now(UTC) - loss.last_loss_at).total_seconds() > DEGRADED_FOR:
        return None
    return f"lost {loss.lost} lifecycle records (latest loss at {loss.last_loss_at.isoformat()})"
