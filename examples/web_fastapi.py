"""Mount the scheduler API and dashboard in a FastAPI app (``pip install fastapi``).

Run from the repository root::

    uvicorn examples.web_fastapi:app --port 8000
    # then open http://127.0.0.1:8000/api/scheduler/dashboard (the API's schema: /api/scheduler/openapi.json)

``scheduler_router`` is a Starlette router, so FastAPI mounts it with ``app.mount`` (``include_router`` is
for FastAPI's own ``APIRouter``). The lifespan runs scheduler, worker, bus and recorder in this process and
registers ``examples/tasks.yaml``, as the spec's "Integrate into App" does on startup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from asyncsched.runtime import Runtime
from asyncsched.web import scheduler_router

TASKS = Path(__file__).with_name("tasks.yaml")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with Runtime(tasks_files=[TASKS], agent="example-agent", http=False):
        yield
    await scheduler_router.services.aclose()


app = FastAPI(title="my app", lifespan=lifespan)
app.mount("/api/scheduler", scheduler_router)


@app.get("/")
async def home() -> dict[str, str]:
    return {"app": "my app", "scheduler": "/api/scheduler/dashboard"}
