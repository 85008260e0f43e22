"""``POST /tasks/bulk``: many tasks in one request, all or nothing, each checked as ``POST /tasks``."""

from __future__ import annotations

from typing import Any

import httpx

from asyncsched.runtime import Runtime


def item(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "cron",
        "schedule": "0 9 * * *",
        "function": "tests.web.webtasks:add",
        **fields,
    }


async def names(client: httpx.AsyncClient) -> list[str]:
    return sorted(t["name"] for t in (await client.get("/tasks", params={"limit": 500})).json()["items"])


async def test_bulk_create_stores_every_task_as_a_single_create_would(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    before = await names(client)
    body = {"tasks": [item(f"b{i}", kwargs={"a": i, "b": 1}) for i in range(50)]}
    created = await client.post("/tasks/bulk", json=body)
    assert created.status_code == 201, created.text
    data = created.json()
    assert data["count"] == 50
    assert len(data["ids"]) == 50
    assert await names(client) == sorted(before + [f"b{i}" for i in range(50)])
    single = (await client.post("/tasks", json=item("single", kwargs={"a": 7, "b": 1}))).json()
    bulk = (await client.get(f"/tasks/{data['ids'][7]}")).json()
    for key in ("agent_name", "source", "type", "schedule", "timezone", "function", "args", "queue"):
        assert bulk[key] == single[key], key
    assert bulk["kwargs"] == {"a": 7, "b": 1}
    assert bulk["next_run_at"] == single["next_run_at"]


async def test_the_first_bad_item_is_named_and_nothing_is_stored(client: httpx.AsyncClient) -> None:
    before = await names(client)
    cases = [
        (item("x", schedule="61 * * * *"), ["body", "tasks", 2, "schedule"]),
        (item("x", function="tests.web.webtasks:nope"), ["body", "tasks", 2, "function"]),
        (item("x", timezone="Mars/Olympus"), ["body", "tasks", 2, "timezone"]),
        (item("x", queue=5), ["body", "tasks", 2, "queue"]),  # the JSON schema
        # crafted function references: an attribute chain, a dunder, a module reached through another
        (item("x", function="tests.web.webtasks:os.system"), ["body", "tasks", 2, "function"]),
        (item("x", function="tests.web.webtasks:__builtins__"), ["body", "tasks", 2, "function"]),
        (item("x", function="tests.web.webtasks.os:system"), ["body", "tasks", 2, "function"]),
    ]
    for bad, loc in cases:
        body = {"tasks": [item("ok0"), item("ok1"), bad, item("ok3", schedule="nope")]}
        response = await client.post("/tasks/bulk", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == loc
        assert await names(client) == before


async def test_name_clashes_are_409_and_store_nothing(client: httpx.AsyncClient) -> None:
    before = await names(client)
    twice = await client.post("/tasks/bulk", json={"tasks": [item("d1"), item("d2"), item("d1")]})
    assert twice.status_code == 409
    assert "tasks 0 and 2" in twice.json()["detail"]
    assert await names(client) == before
    assert (await client.post("/tasks", json=item("taken"))).status_code == 201
    stored = await client.post("/tasks/bulk", json={"tasks": [item("new1"), item("taken")]})
    assert stored.status_code == 409
    assert "'taken' already exists" in stored.json()["detail"]
    assert await names(client) == sorted([*before, "taken"])


async def test_bulk_body_limits(client: httpx.AsyncClient) -> None:
    assert (await client.post("/tasks/bulk", json={"tasks": []})).status_code == 201
    too_many = await client.post("/tasks/bulk", json={"tasks": [item("x")] * 5001})
    assert too_many.status_code in (413, 422)
    assert (await client.post("/tasks/bulk", json=[item("x")])).status_code == 422
