"""Mount the scheduler API and dashboard in a Starlette app.

Run from the repository root::

    uvicorn examples.web_starlette:app --port 8000
    # then open http://127.0.0.1:8000/api/scheduler/dashboard

The lifespan runs the scheduler, a worker, the event bus and the history recorder inside this app (the
spec's "Integrate into App"), firing ``examples/tasks.yaml``. To run those elsewhere (``asyncsched run``,
``asyncsched worker``), drop the ``Runtime`` and keep only the mount: the router reaches the same Redis and
database through the settings (``REDIS_URL``, ``DATABASE_URL``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from asyncsched.runtime import Runtime
from asyncsched.web import scheduler_router

TASKS = Path(__file__).with_name("tasks.yaml")


async def home(request: Request) -> JSONResponse:
    return JSONResponse({"app": "my app", "scheduler": "/api/scheduler/dashboard"})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with Runtime(tasks_files=[TASKS], agent="example-agent", http=False):
        yield
    await scheduler_router.services.aclose()


app = Starlette(
    routes=[Route("/", home), Mount("/api/scheduler", scheduler_router)],
    lifespan=lifespan,
)
