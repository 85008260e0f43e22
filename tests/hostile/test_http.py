"""Hostile and careless HTTP input (issue 13 items 4, 5, 7, 8, 9; issue 16 items 6, 9).

Each case is what an attacker or a careless client tried against the API: it must answer a clear 4xx naming
the field (never a 500), store nothing unreadable, and keep every list page readable for everyone even when
a stored row cannot be decoded. Storage cases run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.routing import Mount

from asyncsched._redis import reset_memory_servers
from asyncsched.config import Settings
from asyncsched.events import EventBus
from asyncsched.exceptions import ConfigurationError, InvalidValue, SerializationError
from asyncsched.queue import TaskQueue
from asyncsched.store import Database, EventMessage, ScheduledTask, TaskExecution
from asyncsched.web import Services, create_app, create_router

from ..web.conftest import RuntimeThread, client_for, write_tasks

TASK = {"name": "t1", "type": "interval", "schedule": "1 hour", "function": "tests.web.webtasks:add"}
LISTS = ["/tasks", "/executions", "/events", "/queues", "/workers"]


@pytest.fixture
def hostile_settings(database_url: str) -> Iterator[Settings]:
    reset_memory_servers()
    yield Settings(
        redis_url=f"memory://hostile-{uuid.uuid4().hex[:8]}",
        database_url=database_url,
        allowed_functions=("tests.web.webtasks",),
        agent="hostile",
    )
    reset_memory_servers()


@pytest.fixture
async def db(hostile_settings: Settings) -> AsyncIterator[Database]:
    async with Database(settings=hostile_settings, auto_migrate=True) as database:
        yield database


@pytest.fixture
async def services(hostile_settings: Settings, db: Database) -> AsyncIterator[Services]:
    async with Services(hostile_settings, db=db) as built:
        yield built


@pytest.fixture
async def api(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Mount("/api", create_router(services))])
    async with client_for(app, "/api") as client:
        yield client


def raw_json(value: Any) -> bytes:
    """JSON text as a client could send it, lone surrogates as ``\\ud800`` escapes."""
    return json.dumps(value).encode()


def locs(response: httpx.Response) -> list[list[Any]]:
    return [e["loc"] for e in response.json()["detail"]]


# -- item 4: lone surrogates are refused at every boundary, naming the field -----------------------------


async def test_surrogate_in_task_kwargs_is_refused_and_nothing_stored(api: httpx.AsyncClient) -> None:
    response = await api.post("/tasks", content=raw_json({**TASK, "kwargs": {"to": "\ud800"}}))
    assert response.status_code == 422, response.text
    assert locs(response) == [["body", "kwargs", "to"]]
    assert "surrogate" in response.json()["detail"][0]["msg"]
    listed = await api.get("/tasks")
    assert listed.status_code == 200
    assert listed.json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"function": "tests.web.webtasks:add", "args": ["ok", "\udfff"]}, ["body", "args", 1]),
        ({"function": "tests.web.webtasks:add", "kwargs": {"\ud83d": 1}}, ["body", "kwargs", "\ufffd"]),
        ({"function": "tests.web.webtasks:add", "description": "x\ud800"}, ["body", "description"]),
    ],
)
async def test_surrogate_in_job_is_refused(
    api: httpx.AsyncClient, body: dict[str, Any], loc: list[Any]
) -> None:
    response = await api.post("/jobs", content=raw_json(body))
    assert response.status_code == 422, response.text
    got = locs(response)[0]
    assert got[:-1] == loc[:-1]
    assert "surrogate" in response.json()["detail"][0]["msg"]
    queues = (await api.get("/queues")).json()["items"]
    assert sum(q["counts"].get("queued", 0) for q in queues) == 0


async def test_valid_non_bmp_text_is_accepted(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/jobs", content=raw_json({"function": "tests.web.webtasks:add", "args": ["😀"]})
    )
    assert response.status_code == 202, response.text


async def test_enqueue_and_publish_share_the_boundary(hostile_settings: Settings) -> None:
    settings = hostile_settings.replace(max_args_bytes=1000, max_payload_bytes=1000)
    async with TaskQueue(settings=settings) as queue:
        with pytest.raises(InvalidValue) as info:
            await queue.enqueue("tests.web.webtasks:add", args=[{"a": ["\ud800"]}])
        assert info.value.field == "args.0.a.0"
        with pytest.raises(InvalidValue, match="ASYNCSCHED_MAX_ARGS_BYTES") as info:
            await queue.enqueue("tests.web.webtasks:add", kwargs={"a": "x" * 2000})
        assert info.value.field == "args/kwargs"
        deep: list[Any] = []
        for _ in range(200):
            deep = [deep]
        with pytest.raises(InvalidValue, match="nested deeper"):
            await queue.enqueue("tests.web.webtasks:add", args=[deep])
        assert sum(c.get("queued", 0) for c in (await queue.queue_counts()).values()) == 0
    async with EventBus(settings=settings, agent_name="a") as bus:
        # The envelope's own checks (events/_envelope.py) refuse lone surrogates and depth before sending;
        # the configurable size bound is the boundary's.
        with pytest.raises(SerializationError, match="surrogate"):
            await bus.publish("a.b", "a", {"k": ["\ud800"]})
        with pytest.raises(InvalidValue, match="ASYNCSCHED_MAX_PAYLOAD_BYTES") as info:
            await bus.publish("a.b", "a", {"k": "x" * 2000})
        assert info.value.field == "payload"
        assert (await bus.publish("a.b", "a", {"k": "😀"})).payload == {"k": "😀"}
        with pytest.raises((SerializationError, ConfigurationError)):
            await bus.publish("a.\ud800", "a", {})


async def test_results_over_the_limit_fail_the_job_with_the_reason(hostile_settings: Settings) -> None:
    from asyncsched.queue import JobStatus
    from asyncsched.testing import run_burst

    settings = hostile_settings.replace(max_result_bytes=100)
    async with TaskQueue(settings=settings) as queue:
        big = await queue.enqueue("tests.web.webtasks:shout", kwargs={"text": "x" * 500})
        small = await queue.enqueue("tests.web.webtasks:shout", kwargs={"text": "x"})
        await run_burst(settings=settings)
        record = await queue.job(big)
        assert record.status == JobStatus.FAILED
        assert "ASYNCSCHED_MAX_RESULT_BYTES" in (record.error or "")
        assert await queue.result(small) == "X"


async def test_scheduler_skips_a_tick_whose_arguments_are_refused(
    hostile_settings: Settings, db: Database
) -> None:
    """A task stored before the boundary existed (a lone surrogate in kwargs) is refused at enqueue: the
    tick is logged and dropped, not retried every lease forever; the task's next tick is tried again."""
    from datetime import timedelta

    from asyncsched.scheduler import TaskScheduler

    from ..scheduler.conftest import FUNCTION, Clock

    class RefusingQueue:
        def __init__(self) -> None:
            self.attempts: list[str] = []

        async def enqueue(self, func: Any, **kwargs: Any) -> str:
            self.attempts.append(kwargs["job_id"])
            raise InvalidValue("kwargs.a", "contains a lone surrogate (text that is not valid UTF-8)")

    queue, clock = RefusingQueue(), Clock()
    async with TaskScheduler(settings=hostile_settings, db=db, queue=queue, clock=clock) as scheduler:
        await scheduler.register_task(name="old", type="interval", schedule="1 minute", function=FUNCTION)
        clock.now += timedelta(minutes=1)
        assert await scheduler.run_pending() == []
        assert len(queue.attempts) == 1
        clock.now += timedelta(minutes=5, seconds=30)  # past the lease: a failed enqueue would be retried
        await scheduler.run_pending()
        first = queue.attempts[0]
        assert queue.attempts.count(first) == 1
        assert len(queue.attempts) >= 2  # the next tick was tried (coalesced misfire)


async def test_ten_megabyte_event_is_refused_by_default(hostile_settings: Settings) -> None:
    async with EventBus(settings=hostile_settings, agent_name="a") as bus:
        with pytest.raises(SerializationError, match=r"1000\d+ bytes, more than the limit of 1048576"):
            await bus.publish("a.big", "a", {"blob": "x" * 10_000_000})


# -- item 4: one unreadable row never fails a list -------------------------------------------------------


async def _set_json(db: Database, table: str, column: str, row_id: str, value: str) -> None:
    cast = f"CAST(CAST(:v AS TEXT) AS {'JSON' if db.dialect == 'postgresql' else 'TEXT'})"
    async with db.engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE {table} SET {column} = {cast} WHERE id = :id"), {"v": value, "id": row_id}
        )


async def _add(db: Database, *rows: Any) -> None:
    async with db.session() as session, session.begin():
        session.add_all(rows)


def _task(name: str) -> ScheduledTask:
    return ScheduledTask(
        agent_name="hostile", name=name, type="interval", schedule="1 hour", function="tests.web.webtasks:add"
    )


DEEP = "[" * 5000 + "]" * 5000
"""Valid JSON that no Python JSON decoder loads (deeper than the recursion limit)."""


@pytest.mark.parametrize("stored", ['{"to": "\\ud800"}', DEEP])
async def test_task_list_survives_an_unreadable_row(
    api: httpx.AsyncClient, db: Database, stored: str
) -> None:
    good, bad = _task("good"), _task("bad")
    await _add(db, good, bad)
    await _set_json(db, "asyncsched_scheduled_tasks", "kwargs", bad.id, stored)
    response = await api.get("/tasks")
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == 2
    items = {item["id"]: item for item in page["items"]}
    assert items[good.id]["name"] == "good"
    assert "degraded" not in items[good.id]
    assert items[bad.id]["degraded"]
    one = await api.get(f"/tasks/{bad.id}")
    assert one.status_code == 200
    assert one.json()["degraded"]
    # The allow-list's trusted-function lookup reads the same table: creating still works.
    assert (await api.post("/tasks", json=TASK)).status_code == 201


@pytest.mark.parametrize("stored", ['{"echo": "\\udc80"}', DEEP])
async def test_execution_list_survives_an_unreadable_row(
    api: httpx.AsyncClient, db: Database, stored: str
) -> None:
    good = TaskExecution(job_id="job-good", status="success", result={"ok": 1})
    bad = TaskExecution(job_id="job-bad", status="success")
    await _add(db, good, bad)
    await _set_json(db, "asyncsched_task_executions", "result", bad.id, stored)
    response = await api.get("/executions")
    assert response.status_code == 200, response.text
    items = {item["id"]: item for item in response.json()["items"]}
    assert items[good.id]["result"] == {"ok": 1}
    assert items[bad.id]["degraded"]
    one = await api.get("/executions/job-bad")
    assert one.status_code == 200
    assert one.json()["degraded"]
    if stored != DEEP:
        assert one.json()["result"] == {"echo": "\ufffd"}


async def test_event_list_survives_unreadable_and_oversized_rows(
    api: httpx.AsyncClient, db: Database, services: Services
) -> None:
    good = EventMessage(event_type="a.good", source_agent="a", payload={"n": 1})
    bad = EventMessage(event_type="a.bad", source_agent="a", payload={})
    deep = EventMessage(event_type="a.deep", source_agent="a", payload={})
    big = EventMessage(event_type="a.big", source_agent="a", payload={"blob": "x" * 2_000_000})
    await _add(db, good, bad, deep, big)
    await _set_json(db, "asyncsched_event_messages", "payload", bad.id, '{"s": "\\ud800"}')
    await _set_json(db, "asyncsched_event_messages", "payload", deep.id, DEEP)
    response = await api.get("/events")
    assert response.status_code == 200, response.text
    assert len(response.content) < 100_000
    items = {item["id"]: item for item in response.json()["items"]}
    assert items[good.id]["payload"] == {"n": 1}
    assert items[bad.id]["payload"] == {"s": "\ufffd"}
    assert "UTF-8" in items[bad.id]["degraded"]
    assert items[deep.id]["degraded"].startswith("row cannot be read")
    assert items[big.id]["payload"] == {}
    assert "ASYNCSCHED_MAX_PAYLOAD_BYTES" in items[big.id]["degraded"]
    paged = (await api.get("/events", params={"limit": 1, "offset": 1})).json()
    assert (paged["total"], paged["offset"], paged["limit"], len(paged["items"])) == (4, 1, 1, 1)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # PostgreSQL's json refuses NaN
async def test_non_finite_number_stored_by_sqlite_is_shown_as_null(
    api: httpx.AsyncClient, db: Database
) -> None:
    row = TaskExecution(job_id="job-nan", status="success")
    await _add(db, row)
    await _set_json(db, "asyncsched_task_executions", "result", row.id, '{"x": NaN}')
    item = (await api.get("/executions")).json()["items"][0]
    assert item["result"] == {"x": None}
    assert "not finite" in item["degraded"]


# -- item 5: concurrent creates of one name: exactly one wins --------------------------------------------


async def test_concurrent_creates_of_one_name_exactly_one_wins(api: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(api.post("/tasks", json={**TASK, "name": "race"}) for _ in range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 19, [r.text for r in responses if r.status_code not in (201, 409)]
    assert all("already exists" in r.json()["detail"] for r in responses if r.status_code == 409)
    assert (await api.get("/tasks")).json()["total"] == 1
    again = await api.post("/tasks", json={**TASK, "name": "race", "schedule": "2 hours"})
    assert again.status_code == 409
    assert (await api.get("/tasks/race")).json()["schedule"] == "1 hour"


async def test_task_names_are_unique_by_a_database_constraint(db: Database) -> None:
    """The constraint that decides the race exists in the migrated schema on every backend."""
    from sqlalchemy import inspect

    async with db.engine.connect() as conn:
        constraints = await conn.run_sync(
            lambda sync: inspect(sync).get_unique_constraints("asyncsched_scheduled_tasks")
        )
    assert {"name": "uq_scheduled_task_agent_name", "columns": ["agent_name", "name"]} in [
        {"name": c["name"], "columns": c["column_names"]} for c in constraints
    ]


# -- item 7: 422, not 500 ---------------------------------------------------------------------------------


VALID_BODY = {
    "/tasks": b'{"name": "b1", "type": "interval", "schedule": "1 hour", '
    b'"function": "tests.web.webtasks:add", "kwargs": {"a": %s}}',
    "/jobs": b'{"function": "tests.web.webtasks:add", "kwargs": {"a": %s}}',
}
"""A valid body of each path with one value to fill in: only that value can make it fail."""


@pytest.mark.parametrize(
    ("value", "msg"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64"),
        (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "nested deeper than 64"),
        (b"[" * 65 + b"]" * 65, "nested deeper than 64"),
        (b"NaN", "finite"),
        (b"Infinity", "finite"),
        (b"[-Infinity]", "finite"),
        (b'"\xff"', "UTF-8"),
        (b'"\xed\xa0\x80"', "UTF-8"),
        (b'"\\ud800"', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
        (b'1, "a": 2', "duplicate key 'a'"),
        (b"1" * 5000, "digits"),
    ],
)
@pytest.mark.parametrize("path", ["/tasks", "/jobs"])
async def test_hostile_bodies_are_422(api: httpx.AsyncClient, path: str, value: bytes, msg: str) -> None:
    ok = await api.post(path, content=VALID_BODY[path] % b"1", headers={"content-type": "application/json"})
    assert ok.status_code in (201, 202), ok.text
    response = await api.post(
        path, content=VALID_BODY[path] % value, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text[:300]
    problem = response.json()["detail"][0]
    assert problem["loc"][0] == "body"
    assert msg in problem["msg"]


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf{}", b"[1, 2", b"nul"])
async def test_malformed_bodies_are_422(api: httpx.AsyncClient, content: bytes) -> None:
    response = await api.post("/jobs", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


@pytest.mark.parametrize(
    "since",
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00",
        "9999-12-31T23:59:59.999999+00:00",
        "99999-01-01T00:00:00",
        "2026-13-01T00:00:00",
        "nan",
        "9" * 300,
    ],
)
@pytest.mark.parametrize("path", ["/executions", "/events"])
async def test_extreme_since_filters_never_500(api: httpx.AsyncClient, path: str, since: str) -> None:
    response = await api.get(
        path, params={"since": since, "until": since} if path == "/executions" else {"since": since}
    )
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert {tuple(loc) for loc in locs(response)} <= {("query", "since"), ("query", "until")}


@pytest.mark.parametrize("path", ["/tasks/%FF", "/executions/%ED%A0%80", "/jobs/a%C3"])
async def test_path_parameters_must_be_utf8(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 422
    assert locs(response)[0][0] == "path"
    assert "UTF-8" in response.json()["detail"][0]["msg"]


# -- item 8: DNS rebinding ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/tasks"), ("POST", "/jobs"), ("POST", "/tasks/t1/disable"), ("GET", "/dashboard"),
     ("GET", "/static/app.js"), ("GET", "/nope"), ("GET", "/")],
)  # fmt: skip
async def test_foreign_host_is_refused_without_token(api: httpx.AsyncClient, method: str, path: str) -> None:
    body = {"function": "tests.web.webtasks:add"} if method == "POST" else None
    response = await api.request(method, path, json=body, headers={"host": "attacker.example"})
    assert response.status_code == 400
    assert "ASYNCSCHED_ALLOWED_HOSTS" in response.json()["detail"]


async def test_health_answers_any_host_without_details(api: httpx.AsyncClient) -> None:
    """Orchestrators probe by IP (``Host: 10.1.2.3:8000``): /health answers, but with no error details."""
    response = await api.get("/health", headers={"host": "10.1.2.3:8000"})
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "redis": "ok", "database": "ok"}


async def test_health_details_only_for_allowed_hosts(hostile_settings: Settings, db: Database) -> None:
    async with Services(hostile_settings.replace(redis_url="redis://127.0.0.1:1/0"), db=db) as services:
        app = Starlette(routes=[Mount("/api", create_router(services))])
        async with client_for(app, "/api") as client:
            foreign = await client.get("/health", headers={"host": "attacker.example"})
            assert foreign.status_code == 503
            assert foreign.json()["redis"] == "unavailable"
            local = await client.get("/health")
            assert local.json()["redis"].startswith("unavailable: ")


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8000", "127.0.0.1", "127.0.0.1:9", "127.1.2.3", "[::1]", "[::1]:8000",
             "app.localhost", "testserver", "LOCALHOST"]
)  # fmt: skip
async def test_loopback_hosts_are_served(api: httpx.AsyncClient, host: str) -> None:
    assert (await api.get("/tasks", headers={"host": host})).status_code == 200


async def test_allowed_hosts_and_token(hostile_settings: Settings, db: Database) -> None:
    cases = [
        (hostile_settings.replace(allowed_hosts=("ops.example",)), "ops.example:8000", 200),
        (hostile_settings.replace(allowed_hosts=("ops.example",)), "other.example", 400),
        (hostile_settings.replace(allowed_hosts=("*",)), "anything.example", 200),
        (hostile_settings.replace(api_token="s3cret"), "attacker.example", 401),
    ]
    for settings, host, status in cases:
        async with Services(settings, db=db) as services:
            app = Starlette(routes=[Mount("/api", create_router(services))])
            async with client_for(app, "/api") as client:
                response = await client.get("/tasks", headers={"host": host})
                assert response.status_code == status, (host, response.text)


def test_allowed_hosts_from_environment() -> None:
    settings = Settings.from_env({"ASYNCSCHED_ALLOWED_HOSTS": "a.example, b.example"})
    assert settings.allowed_hosts == ("a.example", "b.example")


async def test_fastapi_include_router_checks_host_too(services: Services) -> None:
    from fastapi import FastAPI

    from asyncsched.web.fastapi import make_router

    app = FastAPI()
    app.include_router(make_router(create_router(services)), prefix="/api")
    async with client_for(app, "/api") as client:
        assert (await client.get("/tasks", headers={"host": "attacker.example"})).status_code == 400
        assert (await client.get("/tasks")).status_code == 200


# -- item 9: JSON for every error, 413 before reading ------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nope", 404), ("PUT", "/tasks", 405), ("PUT", "/tasks/x", 405),
     ("GET", "/static/nope.js", 404), ("DELETE", "/executions", 405)],
)  # fmt: skip
async def test_router_errors_are_json(api: httpx.AsyncClient, method: str, path: str, status: int) -> None:
    response = await api.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]


async def test_run_app_errors_are_json_everywhere(services: Services) -> None:
    async with client_for(create_app(services), "") as client:
        for method, path, status in [
            ("GET", "/nope", 404),
            ("POST", "/", 405),
            ("GET", "/api/scheduler/nope", 404),
        ]:
            response = await client.request(method, path)
            assert response.status_code == status, path
            assert response.headers["content-type"] == "application/json", path
        assert (await client.get("/", headers={"host": "evil.example"})).status_code == 400


async def test_declared_length_over_limit_is_413_without_reading(api: httpx.AsyncClient) -> None:
    async def never() -> AsyncIterator[bytes]:
        await asyncio.Event().wait()  # a body that never comes: only the header can decide
        yield b""

    response = await asyncio.wait_for(
        api.post("/tasks", content=never(), headers={"content-length": "999999999"}), 10
    )
    assert response.status_code == 413
    bad = await api.post("/tasks", content=b"{}", headers={"content-length": "abc"})
    assert bad.status_code == 400


def test_real_server_answers_413_at_once(tmp_path: Path) -> None:
    reset_memory_servers()
    settings = Settings(redis_url="memory://h413", database_url=f"sqlite+aiosqlite:///{tmp_path}/a.db")
    with RuntimeThread(settings, [write_tasks(tmp_path / "tasks.yaml")]) as server:
        port = server.settings.port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /api/scheduler/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 999999999\r\n\r\n"
            )
            reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"application/json" in reply
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /api/scheduler/tasks HTTP/1.0\r\n\r\n")  # no Host: not a browser
            assert sock.recv(4096).startswith(b"HTTP/1.1 200"), "a request without Host is served"
    reset_memory_servers()


# -- issue 16 item 6: filters by the fields' own names, unknown parameters, paging --------------------------


@pytest.mark.parametrize("path", [*LISTS, "/tasks/x", "/executions/x", "/jobs/x", "/health", "/metrics",
                                  "/openapi.json", "/dashboard"])  # fmt: skip
async def test_unknown_query_parameter_is_422_naming_it(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path, params={"agnet_name": "x"})
    assert response.status_code == 422
    assert locs(response) == [["query", "agnet_name"]]


async def test_filters_by_agent_name_and_pages_every_list(api: httpx.AsyncClient) -> None:
    for agent in ("a1", "a2"):
        for n in range(3):
            assert (
                await api.post("/tasks", json={**TASK, "name": f"t{n}", "agent_name": agent})
            ).status_code == 201
    only = (await api.get("/tasks", params={"agent_name": "a1"})).json()
    assert {t["agent_name"] for t in only["items"]} == {"a1"}
    assert only["total"] == 3
    assert (await api.get("/tasks", params={"agent": "a2"})).json()["total"] == 3
    conflict = await api.get("/tasks", params={"agent": "a1", "agent_name": "a2"})
    assert conflict.status_code == 422
    page = (await api.get("/tasks", params={"limit": 2, "offset": 1})).json()
    assert (page["total"], page["offset"], page["limit"], len(page["items"])) == (6, 1, 2, 2)
    assert (await api.get("/tasks", params={"enabled": "false"})).json()["total"] == 0
    assert (await api.get("/tasks/t1", params={"agent_name": "a2"})).json()["agent_name"] == "a2"
    for path in LISTS:
        body = (await api.get(path, params={"limit": 1})).json()
        assert {"items", "total", "offset", "limit"} <= set(body), path
        assert len(body["items"]) <= 1


# -- issue 16 item 9 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/executions/999999", "/tasks/999999", "/jobs/999999"])
async def test_not_found_detail_keeps_its_quotes(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 404
    assert "'999999'" in response.json()["detail"]


async def test_execution_without_worker_has_null_worker_name(api: httpx.AsyncClient, db: Database) -> None:
    await _add(db, TaskExecution(job_id="job-cancelled", status="cancelled", worker_name=""))
    assert (await api.get("/executions/job-cancelled")).json()["worker_name"] is None
    assert (await api.get("/executions")).json()["items"][0]["worker_name"] is None
