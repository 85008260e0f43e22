"""The web API and dashboard: a Starlette router mountable at any prefix in Starlette or FastAPI apps.

::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from asyncsched.web import scheduler_router

    app = Starlette(routes=[Mount("/api/scheduler", scheduler_router)])
    # FastAPI: app.mount("/api/scheduler", scheduler_router)

``scheduler_router`` builds its components (queue, scheduler, bus, repositories) from the process settings
on the first request that needs them; ``create_router(Services(...))`` binds a router to components you
already run. Endpoints, errors, auth and the allow-list are described in ``docs/api.md``.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from ..config import Settings
from ._live import LiveFeed
from ._router import SchedulerRouter, create_router
from ._security import host_ok, host_refusal
from ._services import ComponentUnavailable, Services
from ._spec import openapi_document

__all__ = [
    "ComponentUnavailable",
    "LiveFeed",
    "SchedulerRouter",
    "Services",
    "create_app",
    "create_router",
    "openapi_document",
    "scheduler_router",
]

DEFAULT_PREFIX = "/api/scheduler"

scheduler_router: SchedulerRouter = create_router()
"""The default router: components built lazily from :func:`asyncsched.get_settings` on first use."""


def create_app(
    services: Services | None = None,
    *,
    settings: Settings | None = None,
    prefix: str = DEFAULT_PREFIX,
    **starlette_options: Any,
) -> Starlette:
    """A Starlette app serving the API and dashboard under ``prefix``; ``/`` redirects to the dashboard."""
    if services is None:
        services = Services(settings)
    router = create_router(services)
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""

    async def root(request: Request) -> Response:
        settings = services.settings
        if not host_ok(request, settings.api_token, settings.allowed_hosts):
            return JSONResponse({"detail": host_refusal(request)}, status_code=400)
        return RedirectResponse(f"{request.scope.get('root_path', '')}{prefix}/dashboard")

    routes: list[Route | Mount] = [Mount(prefix, router)] if prefix else []
    if prefix:
        routes.insert(0, Route("/", root, methods=["GET"]))
    else:
        routes.append(Mount("", router))
    handlers: dict[Any, Any] = {HTTPException: _http_error, Exception: _server_error}
    handlers.update(starlette_options.pop("exception_handlers", None) or {})
    return Starlette(routes=routes, exception_handlers=handlers, **starlette_options)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Every error of the app outside the API's own routes (unknown paths, 405s) as JSON."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    """An unexpected error as JSON (the traceback goes to the log, never to the client)."""
    return JSONResponse({"detail": "internal error (see the server log)"}, status_code=500)
