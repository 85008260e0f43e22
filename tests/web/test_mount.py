"""Mounting the router (Starlette and FastAPI, any prefix), auth, CORS, the allow-list default, 503s.

These use the embedded backends only: they test the HTTP layer, not storage (``test_api.py`` runs the
API on every backend).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from asyncsched._redis import reset_memory_servers
from asyncsched.config import Settings, set_settings
from asyncsched.web import Services, create_app, create_router, scheduler_router

from .conftest import client_for

TASK = {"name": "m1", "type": "interval", "schedule": "1 hour", "function": "tests.web.webtasks:add"}


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Settings]:
    reset_memory_servers()
    settings = Settings(
        redis_url="memory://web-mount",
        database_url=f"sqlite+aiosqlite:///{tmp_path}/web.db",
        allowed_functions=("tests.web.webtasks",),
    )
    set_settings(settings)
    yield settings
    set_settings(None)
    reset_memory_servers()


def starlette_app(router: Any, prefix: str) -> Starlette:
    return Starlette(routes=[Mount(prefix, router)])


def fastapi_app(router: Any, prefix: str) -> FastAPI:
    app = FastAPI()
    app.mount(prefix, router)
    return app


def fastapi_include(router: Any, prefix: str) -> FastAPI:
    """The spec's own form: ``app.include_router(scheduler_router, prefix=..., tags=[...])``."""
    from asyncsched.web.fastapi import make_router

    app = FastAPI()
    app.include_router(make_router(router), prefix=prefix, tags=["scheduler"])
    return app


@pytest.fixture
async def default_router(embedded: Settings) -> AsyncIterator[Any]:
    yield scheduler_router
    await scheduler_router.services.aclose()


@pytest.mark.parametrize("framework", [starlette_app, fastapi_app, fastapi_include])
@pytest.mark.parametrize("prefix", ["/api/scheduler", "/ops/jobs"])
async def test_default_router_mounts_anywhere(default_router: Any, framework: Any, prefix: str) -> None:
    async with client_for(framework(default_router, prefix), prefix) as client:
        created = await client.post("/tasks", json=TASK)
        assert created.status_code == 201, created.text
        assert created.headers["location"] == f"{prefix}/tasks/{created.json()['id']}"
        assert [t["name"] for t in (await client.get("/tasks")).json()["items"]] == ["m1"]
        assert (await client.post("/tasks", json={**TASK, "schedule": "soon"})).status_code == 422

        doc = (await client.get("/openapi.json")).json()
        assert doc["servers"] == [{"url": prefix}]
        assert "/executions/{execution_id}/cancel" in doc["paths"]

        page = await client.get("/dashboard")
        assert page.status_code == 200
        assert f'<meta name="asyncsched-base" content="{prefix}">' in page.text
        assert f'src="{prefix}/static/app.js"' in page.text
        script = await client.get("/static/app.js")
        assert script.status_code == 200
        assert "EventSource" in script.text or "events/stream" in script.text
        assert (await client.get("/static/app.css")).status_code == 200
        assert (await client.get("/no-such-route")).status_code == 404
        assert (await client.get("/")).json()["dashboard"] == f"{prefix}/dashboard"


async def test_create_app_redirects_root_to_dashboard(embedded: Settings) -> None:
    async with Services(embedded) as services, client_for(create_app(services), "") as client:
        response = await client.get("/")
        assert response.status_code == 307
        assert response.headers["location"] == "/api/scheduler/dashboard"
        assert (await client.get("/api/scheduler/health")).json()["status"] == "ok"


async def test_bearer_token_protects_everything_but_health_docs_and_page(embedded: Settings) -> None:
    settings = embedded.replace(api_token="s3cret-token")
    async with Services(settings) as services:
        app = starlette_app(create_router(services), "/api")
        async with client_for(app, "/api") as anonymous:
            for method, path in [
                ("GET", "/tasks"),
                ("POST", "/tasks"),
                ("GET", "/metrics"),
                ("GET", "/queues"),
            ]:
                response = await anonymous.request(method, path, json=TASK if method == "POST" else None)
                assert response.status_code == 401, path
                assert response.headers["www-authenticate"] == "Bearer"
                assert "s3cret" not in response.text
            wrong = await anonymous.get("/tasks", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert (await anonymous.get("/health")).json() == {
                "status": "ok",
                "redis": "ok",
                "database": "ok",
            }
            doc = (await anonymous.get("/openapi.json")).json()
            assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
            page = await anonymous.get("/dashboard")
            assert page.status_code == 200
            assert 'name="asyncsched-token-required" content="true"' in page.text
        async with client_for(app, "/api", authorization="Bearer s3cret-token") as client:
            assert (await client.post("/tasks", json=TASK)).status_code == 201
            assert (await client.get("/tasks")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200


async def test_cors_is_off_unless_configured(embedded: Settings) -> None:
    preflight = {"origin": "https://ops.example", "access-control-request-method": "POST"}
    async with Services(embedded) as services, client_for(create_router(services), "") as client:
        response = await client.get("/health", headers={"origin": "https://ops.example"})
        assert "access-control-allow-origin" not in response.headers
        assert (await client.options("/tasks", headers=preflight)).status_code == 405
    settings = embedded.replace(cors_origins=("https://ops.example",))
    async with Services(settings) as services, client_for(create_router(services), "") as client:
        allowed = await client.options("/tasks", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://ops.example"
        other = await client.get("/health", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        assert (
            await client.post("/tasks", json=TASK, headers={"origin": "https://ops.example"})
        ).status_code == 201


async def test_cross_site_posts_are_refused(embedded: Settings) -> None:
    async with Services(embedded) as services, client_for(create_router(services), "") as client:
        cross = await client.post("/tasks/x/disable", headers={"origin": "https://evil.example"})
        assert cross.status_code == 403
        assert "cross-origin" in cross.json()["detail"]
        same = await client.post("/tasks", json=TASK, headers={"origin": "http://localhost"})
        assert same.status_code == 201


async def test_without_allow_list_only_configured_functions_run(embedded: Settings, tmp_path: Path) -> None:
    from asyncsched.scheduler import TaskScheduler

    settings = embedded.replace(allowed_functions=())
    async with Services(settings) as services, client_for(create_router(services), "") as client:
        refused = await client.post("/tasks", json=TASK)
        assert refused.status_code == 403
        assert "ASYNCSCHED_ALLOWED_FUNCTIONS" in refused.json()["detail"]
        assert (await client.post("/jobs", json={"function": "tests.web.webtasks:add"})).status_code == 403
        # A task defined by configuration (code or YAML) makes its function usable through the API.
        scheduler: TaskScheduler = await services.scheduler()
        await scheduler.register_task(
            name="configured", type="interval", schedule="1 hour", function="tests.web.webtasks:add"
        )
        assert (await client.post("/jobs", json={"function": "tests.web.webtasks:add"})).status_code == 202
        assert (await client.post("/tasks", json=TASK)).status_code == 201
        # ...but a task created through the API does not vouch for its own function.
        assert (await client.post("/jobs", json={"function": "tests.web.webtasks:shout"})).status_code == 403


async def test_a_task_created_through_the_api_never_vouches_for_its_function(settings: Settings) -> None:
    """On every backend: a function the API scheduled while an allow-list allowed it is refused once no
    allow-list is set, since no configured (YAML or code) task uses it; API-created tasks are not trusted."""
    from ..scheduler.conftest import create_tables

    await create_tables(settings.database_url)
    shout = {**TASK, "name": "via-api", "function": "tests.web.webtasks:shout"}
    listed = settings.replace(allowed_functions=("tests.web.webtasks:shout",))
    async with Services(listed) as services, client_for(create_router(services), "") as client:
        assert (await client.post("/tasks", json=shout)).status_code == 201
    unlisted = settings.replace(allowed_functions=())
    async with Services(unlisted) as services, client_for(create_router(services), "") as client:
        tasks = (await client.get("/tasks")).json()
        assert [t["function"] for t in tasks["items"]] == ["tests.web.webtasks:shout"]
        attempts = (("/jobs", {"function": "tests.web.webtasks:shout"}), ("/tasks", {**shout, "name": "x"}))
        for path, body in attempts:
            refused = await client.post(path, json=body)
            assert refused.status_code == 403, (path, refused.text)
            assert "no allow-list is set" in refused.json()["detail"]


async def test_unreachable_redis_answers_503(tmp_path: Path) -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0", database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"
    )
    async with Services(settings) as services, client_for(create_router(services), "") as client:
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["redis"].startswith("unavailable")
        assert health.json()["database"] == "ok"
        queues = await client.get("/queues")
        assert queues.status_code == 503
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert 'asyncsched_up{backend="redis"} 0' in metrics.text


async def test_oversized_body_is_refused(embedded: Settings) -> None:
    async with Services(embedded) as services, client_for(create_router(services), "") as client:
        response = await client.post(
            "/tasks", content=b"[" + b"1," * 600_000 + b"1]", headers={"content-type": "application/json"}
        )
        assert response.status_code == 413


async def test_router_is_an_asgi_router(default_router: Any) -> None:
    from starlette.routing import Router

    assert isinstance(default_router, Router)
    # an ASGI app by itself, unmounted: it answers requests at its own root
    async with client_for(default_router, "") as client:
        health = await client.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "redis": "ok", "database": "ok"}
        assert (await client.get("/tasks")).json()["items"] == []
