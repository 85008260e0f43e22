"""The API as a FastAPI ``APIRouter``, for the spec's ``app.include_router(scheduler_router, prefix=...)``.

::

    from fastapi import FastAPI
    from asyncsched.web.fastapi import scheduler_router

    app = FastAPI()
    app.include_router(scheduler_router, prefix="/api/scheduler", tags=["scheduler"])

The routes are the Starlette router's own (same handlers, auth and allow-list); they are kept out of
FastAPI's generated OpenAPI document because the router serves its own at ``<prefix>/openapi.json``.
CORS: with ``include_router`` your app's middleware applies; ``app.mount(prefix,
asyncsched.web.scheduler_router)`` keeps the router's own CORS layer (``ASYNCSCHED_CORS_ORIGINS``).
Importing this module needs FastAPI.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.routing import Mount, Route

from . import scheduler_router as _starlette_router
from ._router import SchedulerRouter

__all__ = ["make_router", "scheduler_router"]


def make_router(router: SchedulerRouter | None = None) -> APIRouter:
    """A FastAPI ``APIRouter`` serving ``router``'s routes (default: the lazily configured default router)."""
    source = router if router is not None else _starlette_router
    api = APIRouter()
    for route in source.routes:
        if isinstance(route, Route):
            api.add_route(
                route.path,
                route.endpoint,
                methods=sorted(route.methods or ()),
                name=route.name,
                include_in_schema=False,
            )
        elif isinstance(route, Mount):
            api.routes.append(route)
    return api


scheduler_router: APIRouter = make_router()
"""The default API (services built from the settings on first request) as an ``APIRouter``."""
