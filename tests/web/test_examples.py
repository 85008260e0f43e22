"""``examples/web_starlette.py`` and ``examples/web_fastapi.py`` work as documented (lifespan included)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asyncsched._redis import reset_memory_servers
from asyncsched.config import Settings, set_settings

from .conftest import until


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[None]:
    reset_memory_servers()
    set_settings(
        Settings(redis_url="memory://examples", database_url=f"sqlite+aiosqlite:///{tmp_path}/ex.db")
    )
    yield
    set_settings(None)
    reset_memory_servers()


@pytest.mark.usefixtures("embedded")
@pytest.mark.parametrize("module", ["examples.web_starlette", "examples.web_fastapi"])
async def test_example_app(module: str) -> None:
    app = importlib.import_module(module).app
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        assert (await client.get("/")).json()["scheduler"] == "/api/scheduler/dashboard"
        tasks = (await client.get("/api/scheduler/tasks")).json()["items"]
        assert {t["name"] for t in tasks} == {"heartbeat", "process_pending_emails", "daily_report"}
        assert {t["agent_name"] for t in tasks} == {"example-agent"}
        run = await client.post("/api/scheduler/tasks/heartbeat/run", params={"agent": "example-agent"})
        assert run.status_code == 202

        async def succeeded() -> dict[str, Any] | None:
            job: dict[str, Any] = (await client.get(f"/api/scheduler/jobs/{run.json()['job_id']}")).json()
            return job if job.get("status") == "success" else None

        job = await until(succeeded)
        assert job["result"]["note"] == "still here"
        assert "asyncsched-base" in (await client.get("/api/scheduler/dashboard")).text
