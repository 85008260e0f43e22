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
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from ..config import Settings
from ._live import LiveFeed
from ._router import SchedulerRouter, create_router
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
        return RedirectResponse(f"{request.scope.get('root_path', '')}{prefix}/dashboard")

    routes: list[Route | Mount] = [Mount(prefix, router)] if prefix else []
    if prefix:
        routes.insert(0, Route("/", root, methods=["GET"]))
    else:
        routes.append(Mount("", router))
    return Starlette(routes=routes, **starlette_options)
