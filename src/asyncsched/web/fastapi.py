"""FastAPI: the spec's ``app.include_router(scheduler_router, prefix=..., tags=...)``.

::

    from fastapi import FastAPI
    from asyncsched import scheduler_router          # the same object as asyncsched.web.scheduler_router

    app = FastAPI()
    app.include_router(scheduler_router, prefix="/api/scheduler", tags=["scheduler"])

With FastAPI installed, :class:`~asyncsched.web.SchedulerRouter` is a FastAPI ``APIRouter`` (and still a
Starlette ``Router``), so the one ``scheduler_router`` works with ``include_router``, ``app.mount`` and
Starlette's ``Mount``. This module stays for code written against earlier versions. The routes are kept out
of FastAPI's generated OpenAPI document because the router serves its own at ``<prefix>/openapi.json``.
CORS: with ``include_router`` your app's middleware applies; ``app.mount(prefix, scheduler_router)`` keeps
the router's own CORS layer (``ASYNCSCHED_CORS_ORIGINS``). Importing this module needs FastAPI.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import scheduler_router as _default_router
from ._router import SchedulerRouter

__all__ = ["make_router", "scheduler_router"]


def make_router(router: SchedulerRouter | None = None) -> APIRouter:
    """``router`` (default: the lazily configured default router), which is already an ``APIRouter``."""
    source = router if router is not None else _default_router
    if not isinstance(source, APIRouter):  # pragma: no cover - FastAPI importable here means it is one
        raise TypeError(
            "FastAPI could not be imported when asyncsched.web was; include_router is unavailable"
        )
    return source


scheduler_router: APIRouter = make_router()
"""The default router (the same object as :data:`asyncsched.web.scheduler_router`)."""
