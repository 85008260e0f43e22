"""Issue 17 in the API: retry policies with backoff on POST /jobs and tasks, progress on GET /jobs/{id}."""

from __future__ import annotations

import json

import httpx

from asyncsched.runtime import Runtime

from .conftest import until


async def test_post_job_with_backoff_policy(client: httpx.AsyncClient, runtime: Runtime) -> None:
    body = {
        "function": "tests.web.webtasks:add",
        "delay": 3600,
        "retry": {
            "max": 4,
            "backoff": "exponential",
            "base": 2,
            "cap": 10,
            "jitter": True,
            "on": ["OSError"],
        },
    }
    accepted = await client.post("/jobs", json=body)
    assert accepted.status_code == 202, accepted.text
    assert runtime.services is not None
    queue = await runtime.services.queue()
    raw = await queue.redis.hgetall(queue.keys.job(accepted.json()["job_id"]))
    assert json.loads(raw[b"retry_intervals"]) == [2, 4, 8, 10]
    policy = json.loads(raw[b"asyncsched_retry"])
    assert policy == {
        "max": 4,
        "backoff": "exponential",
        "base": 2.0,
        "cap": 10.0,
        "jitter": True,
        "on": ["builtins.OSError"],
    }


async def test_bad_retry_policies_are_422_naming_retry(client: httpx.AsyncClient) -> None:
    for retry in (
        {"max": 2, "backoff": "linear"},
        {"max": 2, "on": ["os.path"]},
        {"max": 2, "on": ["somewhere_not_imported.Boom"]},  # not imported: the API imports nothing new
        {"max": 2, "jitter": True},
        {"backoff": "exponential"},
    ):
        answer = await client.post("/jobs", json={"function": "tests.web.webtasks:add", "retry": retry})
        assert answer.status_code == 422, (retry, answer.text)
        assert [e["loc"] for e in answer.json()["detail"]] == [["body", "retry"]], answer.text
    task = {
        "name": "bad-retry",
        "type": "interval",
        "schedule": "1 hour",
        "function": "tests.web.webtasks:add",
    }
    answer = await client.post("/tasks", json={**task, "retry": {"max": 2, "on": ["os.path"]}})
    assert answer.status_code == 422, answer.text
    ok = await client.post(
        "/tasks",
        json={**task, "retry": {"max": 3, "backoff": "exponential", "cap": 60, "on": ["TimeoutError"]}},
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["options"]["retry"]["on"] == ["builtins.TimeoutError"]


async def test_progress_on_get_job(client: httpx.AsyncClient, runtime: Runtime) -> None:
    accepted = await client.post(
        "/jobs", json={"function": "tests.web.webtasks:report", "kwargs": {"fraction": 0.75}}
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]

    async def done() -> dict[str, object] | None:
        job = (await client.get(f"/jobs/{job_id}")).json()
        return job if job["status"] == "success" else None

    job = await until(done, runtime)
    assert job["progress"] == 0.75
    assert job["meta"] == {"progress": 0.75}
