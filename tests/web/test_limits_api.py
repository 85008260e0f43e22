"""POST /jobs with a flow limit, and GET /limits listing the limits in use with their usage."""

from __future__ import annotations

from typing import Any

import httpx

from tests.waiting import eventually

ADD = "tests.web.webtasks:add"


async def test_post_job_with_a_limit_and_list_limits(client: httpx.AsyncClient) -> None:
    posted = await client.post(
        "/jobs",
        json={"function": ADD, "args": [1, 2], "limit": {"rate": "api-test:5/m", "max_concurrency": 2}},
    )
    assert posted.status_code == 202, posted.text

    async def shown() -> dict[str, Any]:
        page = (await client.get("/limits")).json()
        return {item["key"]: item for item in page["items"]}

    items = await eventually(lambda: _both(shown), what="the job's limit keys to be listed")
    assert items["api-test"] | {"started": 1} == {
        "key": "api-test", "kind": "asyncsched", "max_concurrency": None, "rate": 5, "period": 60.0,
        "running": 0, "started": 1, "waiting": 0,
    }  # fmt: skip
    assert items[f"function:{ADD}"]["max_concurrency"] == 2
    assert items["api-test"]["started"] == 1  # one start in the current minute


async def _both(shown: Any) -> dict[str, Any] | None:
    items: dict[str, Any] = await shown()
    return items if {"api-test", f"function:{ADD}"} <= set(items) else None


async def test_bad_limits_are_422_naming_the_field(client: httpx.AsyncClient) -> None:
    for limit, loc in (
        ({"rate": "fast"}, ["body", "limit"]),
        ({"concurrency_key": "t:{tenant}", "max_concurrency": 1}, ["body", "limit"]),
        ({"max_concurrency": 0}, ["body", "limit", "max_concurrency"]),
        ({"burst": 2}, ["body", "limit", "burst"]),
    ):
        bad = await client.post("/jobs", json={"function": ADD, "args": [1, 2], "limit": limit})
        assert bad.status_code == 422, (limit, bad.text)
        assert bad.json()["detail"][0]["loc"][: len(loc)] == loc, (limit, bad.json())
