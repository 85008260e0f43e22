"""One ``scheduler_router`` object for Starlette ``Mount``, ``app.mount`` and FastAPI ``include_router``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

import asyncsched
import asyncsched.web
from asyncsched._redis import reset_memory_servers
from asyncsched.config import Settings, set_settings


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[asyncsched.web.SchedulerRouter]:
    reset_memory_servers()
    set_settings(
        Settings(redis_url="memory://one-router", database_url=f"sqlite+aiosqlite:///{tmp_path}/r.db")
    )
    yield asyncsched.scheduler_router
    await asyncsched.scheduler_router.services.aclose()
    set_settings(None)
    reset_memory_servers()


def test_the_top_level_name_is_the_web_one() -> None:
    from asyncsched.web.fastapi import scheduler_router as fastapi_router

    assert asyncsched.scheduler_router is asyncsched.web.scheduler_router is fastapi_router


def include(router: object, prefix: str) -> FastAPI:
    app = FastAPI()
    app.include_router(router, prefix=prefix, tags=["scheduler"])  # type: ignore[arg-type]
    return app


def fastapi_mount(router: object, prefix: str) -> FastAPI:
    app = FastAPI()
    app.mount(prefix, router)  # type: ignore[arg-type]
    return app


def starlette_mount(router: object, prefix: str) -> Starlette:
    return Starlette(routes=[Mount(prefix, router)])  # type: ignore[arg-type]


@pytest.mark.parametrize("build", [include, fastapi_mount, starlette_mount])
async def test_from_asyncsched_import_scheduler_router_works_everywhere(
    router: asyncsched.web.SchedulerRouter, build: object
) -> None:
    app = build(router, "/api/scheduler")  # type: ignore[operator]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        listed = await client.get("/api/scheduler/tasks")
        assert listed.status_code == 200, listed.text
        assert listed.json()["items"] == []
        assert (await client.get("/api/scheduler/tasks/nope")).status_code == 404
        assert (await client.get("/api/scheduler/dashboard")).status_code == 200


def test_the_router_works_and_fastapi_is_not_imported_without_fastapi(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["fastapi"] = None  # as if FastAPI were not installed
        import httpx, asyncio
        from starlette.applications import Starlette
        from starlette.routing import Mount
        from asyncsched import scheduler_router
        from starlette.routing import Router

        assert type(scheduler_router).__mro__[1] is Router, type(scheduler_router).__mro__
        app = Starlette(routes=[Mount("/api/scheduler", scheduler_router)])

        async def main():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
                response = await client.get("/api/scheduler/health")
                assert response.status_code == 200, response.text
            await scheduler_router.services.aclose()

        asyncio.run(main())
        assert sys.modules.get("fastapi") is None
        print("ok")
        """
    )
    env = {"REDIS_URL": "memory://", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"}
    import os

    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
