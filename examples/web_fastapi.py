"""Mount the scheduler API and dashboard in a FastAPI app (``pip install fastapi``).

Run from the repository root::

    uvicorn examples.web_fastapi:app --port 8000
    # then open http://127.0.0.1:8000/api/scheduler/dashboard (the API's schema: /api/scheduler/openapi.json)

As in the spec's "Integrate into App": ``app.include_router(scheduler_router, prefix="/api/scheduler",
tags=["scheduler"])`` with the ``APIRouter`` form from ``asyncsched.web.fastapi`` (``app.mount(prefix,
asyncsched.web.scheduler_router)`` works too). The lifespan runs scheduler, worker, bus and recorder in this
process and registers ``examples/tasks.yaml``, as the spec's startup hook does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from asyncsched import web
from asyncsched.runtime import Runtime
from asyncsched.web.fastapi import scheduler_router

TASKS = Path(__file__).with_name("tasks.yaml")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with Runtime(tasks_files=[TASKS], agent="example-agent", http=False):
        yield
    await web.scheduler_router.services.aclose()


app = FastAPI(title="my app", lifespan=lifespan)
app.include_router(scheduler_router, prefix="/api/scheduler", tags=["scheduler"])


@app.get("/")
async def home() -> dict[str, str]:
    return {"app": "my app", "scheduler": "/api/scheduler/dashboard"}
