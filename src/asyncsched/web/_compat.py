"""The base of :class:`~asyncsched.web.SchedulerRouter`: FastAPI's ``APIRouter`` when FastAPI is installed.

An ``APIRouter`` is a Starlette ``Router`` (so ``Mount``/``app.mount`` work the same), and FastAPI's
``app.include_router(router, prefix=..., tags=...)`` accepts only ``APIRouter`` instances (it calls private
methods such as ``_contains_router``). Basing the one router object on it when FastAPI is present makes the
same ``scheduler_router`` work in both frameworks; without FastAPI it is a plain Starlette ``Router`` and
FastAPI is never imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import TYPE_CHECKING

from starlette.routing import Router

__all__ = ["RouterBase", "fastapi_available"]

log = logging.getLogger("asyncsched.web")


def fastapi_available() -> bool:
    """Whether FastAPI can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("fastapi") is not None
    except (ImportError, ValueError):
        return False


def _router_base() -> type[Router]:
    if not fastapi_available():
        return Router
    try:
        base: type[Router] = importlib.import_module("fastapi").APIRouter
    except Exception as exc:  # a broken FastAPI install must not break the Starlette router
        log.warning("FastAPI is installed but cannot be imported (%s); include_router will not work", exc)
        return Router
    return base


if TYPE_CHECKING:
    RouterBase = Router
else:
    RouterBase = _router_base()
