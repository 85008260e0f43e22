"""The API against a running runtime (scheduler, worker, recorder, bus) on every backend."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from asyncsched.runtime import Runtime

from .conftest import until


async def execution_of(
    client: httpx.AsyncClient, job_id: str, status: str = "success"
) -> dict[str, Any] | None:
    response = await client.get(f"/executions/{job_id}")
    if response.status_code == 404:
        return None
    data: dict[str, Any] = response.json()
    return data if data["status"] == status else None


@pytest.mark.cluster  # the API over a runtime on a Redis Cluster too
async def test_task_endpoints_end_to_end(client: httpx.AsyncClient, runtime: Runtime) -> None:
    body = {
        "name": "api_add",
        "description": "created through the API",
        "type": "cron",
        "schedule": "0 9 * * *",
        "timezone": "Europe/Berlin",
        "function": "tests.web.webtasks:add",
        "kwargs": {"a": 1, "b": 1},
    }
    created = await client.post("/tasks", json=body)
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["name"] == "api_add"
    assert task["agent_name"] == "web-tests"
    assert task["source"] == "api"
    assert task["next_run_at"] is not None
    assert created.headers["location"].endswith(f"/api/scheduler/tasks/{task['id']}")

    listed = (await client.get("/tasks")).json()
    assert sorted(t["name"] for t in listed["items"]) == ["api_add", "yaml_add"]
    assert [t["name"] for t in (await client.get("/tasks", params={"agent": "nobody"})).json()["items"]] == []

    assert (await client.get(f"/tasks/{task['id']}")).json()["id"] == task["id"]
    assert (await client.get("/tasks/api_add", params={"agent": "web-tests"})).json()["id"] == task["id"]

    disabled = await client.post(f"/tasks/{task['id']}/disable")
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False
    assert disabled.json()["next_run_at"] is None
    enabled = await client.post(f"/tasks/{task['id']}/enable")
    assert enabled.json()["enabled"] is True

    run = await client.post(f"/tasks/{task['id']}/run")
    assert run.status_code == 202
    job_id = run.json()["job_id"]
    execution = await until(lambda: execution_of(client, job_id), runtime)
    assert execution["task_name"] == "api_add"
    assert execution["result"] == 2
    assert execution["duration"] is not None
    assert execution["scheduled_task_id"] == task["id"]

    page = (await client.get("/executions", params={"task_id": task["id"], "status": "success"})).json()
    assert [e["job_id"] for e in page["items"]] == [job_id]
    assert page["total"] == 1
    assert (await client.get("/executions", params={"agent": "web-tests", "limit": 1})).json()["limit"] == 1

    deleted = await client.delete(f"/tasks/{task['id']}")
    assert deleted.status_code == 204
    assert (await client.get(f"/tasks/{task['id']}")).status_code == 404


async def test_errors_name_the_offending_fields(client: httpx.AsyncClient) -> None:
    base = {"name": "t", "type": "cron", "schedule": "0 9 * * *", "function": "tests.web.webtasks:add"}

    bad_cron = await client.post("/tasks", json={**base, "schedule": "61 * * * *"})
    assert bad_cron.status_code == 422
    assert [e["loc"] for e in bad_cron.json()["detail"]] == [["body", "schedule"]]

    bad_interval = await client.post("/tasks", json={**base, "type": "interval", "schedule": "5 fortnights"})
    assert bad_interval.status_code == 422
    assert bad_interval.json()["detail"][0]["loc"] == ["body", "schedule"]

    unknown = await client.post("/tasks", json={**base, "type": "weekly", "colour": "red"})
    assert unknown.status_code == 422
    assert sorted(e["loc"][1] for e in unknown.json()["detail"]) == ["colour", "type"]

    bad_tz = await client.post("/tasks", json={**base, "timezone": "Mars/Olympus"})
    assert bad_tz.json()["detail"][0]["loc"] == ["body", "timezone"]

    not_json = await client.post("/tasks", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    assert not_json.json()["detail"][0]["loc"] == ["body"]

    missing = await client.post("/tasks", json={})
    assert {tuple(e["loc"]) for e in missing.json()["detail"]} == {
        ("body", "name"),
        ("body", "type"),
        ("body", "schedule"),
        ("body", "function"),
    }

    not_importable = await client.post("/tasks", json={**base, "function": "tests.web.webtasks:missing"})
    assert not_importable.status_code == 422
    assert not_importable.json()["detail"][0]["loc"] == ["body", "function"]

    assert (await client.post("/tasks", json=base)).status_code == 201
    duplicate = await client.post("/tasks", json=base)
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["detail"]

    forbidden = await client.post("/tasks", json={**base, "name": "evil", "function": "os:system"})
    assert forbidden.status_code == 403
    assert (await client.post("/jobs", json={"function": "subprocess:run"})).status_code == 403

    for path in ("/tasks/nope", "/executions/nope", "/jobs/nope"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "detail" in response.json()
    assert (await client.post("/tasks/nope/enable")).status_code == 404
    assert (await client.post("/executions/nope/cancel")).status_code == 404
    assert (await client.delete("/tasks/nope")).status_code == 404
    assert (await client.get("/executions", params={"limit": "9999"})).status_code == 422
    # NUL characters never reach the database (PostgreSQL refuses them in text).
    assert (await client.get("/tasks/a%00b")).status_code == 422
    nul = await client.post(
        "/tasks", json={**base, "name": "n", "description": "a\x00b", "kwargs": {"k\x00": 1}}
    )
    assert nul.status_code == 422
    assert [e["loc"] for e in nul.json()["detail"]] == [["body", "description"], ["body", "kwargs", "k\x00"]]


@pytest.mark.cluster  # the API over a runtime on a Redis Cluster too
async def test_jobs_cancel_queues_workers_and_events(client: httpx.AsyncClient, runtime: Runtime) -> None:
    accepted = await client.post(
        "/jobs",
        json={"function": "tests.web.webtasks:shout", "kwargs": {"text": "hey"}, "agent_name": "web-tests"},
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    execution = await until(lambda: execution_of(client, job_id), runtime)
    assert execution["result"] == "HEY"
    job = (await client.get(f"/jobs/{job_id}")).json()
    assert job["status"] == "success"
    assert job["function"].endswith("shout")

    failing = (await client.post("/jobs", json={"function": "tests.web.webtasks:boom"})).json()["job_id"]
    failed = await until(lambda: execution_of(client, failing, "failed"), runtime)
    assert "boom" in failed["error"]

    later = await client.post("/jobs", json={"function": "tests.web.webtasks:add", "delay": 3600})
    assert later.json()["status"] == "scheduled"
    cancelled = await client.post(f"/executions/{later.json()['job_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    again = await client.post(f"/executions/{job_id}/cancel")
    assert again.status_code == 409

    queues = (await client.get("/queues")).json()["items"]
    default = next(q for q in queues if q["name"] == "default")
    assert default["counts"]["failed"] >= 1

    workers = (await client.get("/workers")).json()["items"]
    assert len(workers) == 1
    assert workers[0]["last_heartbeat"] is not None

    async def completed_event() -> dict[str, Any] | None:
        page = (await client.get("/events", params={"event_type": "task.*", "limit": 100})).json()
        return next((e for e in page["items"] if e["payload"].get("job_id") == job_id), None)

    event = await until(completed_event, runtime)
    assert event["event_type"].startswith("task.")


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample line of an exposition."""
    pairs = (line.rpartition(" ") for line in text.splitlines() if line and not line.startswith("#"))
    return {key: float(value) for key, _, value in pairs}


async def test_health_and_metrics(client: httpx.AsyncClient, runtime: Runtime) -> None:
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "redis": "ok", "database": "ok"}

    run = (await client.post("/tasks/yaml_add/run")).json()["job_id"]
    await until(lambda: execution_of(client, run), runtime)
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    lines = set(text.splitlines())
    assert 'asyncsched_up{backend="redis"} 1' in lines
    assert 'asyncsched_up{backend="database"} 1' in lines
    assert 'asyncsched_scheduled_tasks{enabled="true"} 1' in lines
    assert 'asyncsched_scheduled_tasks{enabled="false"} 0' in lines
    assert "asyncsched_workers 1" in lines
    # the one run, in Redis and in SQL; every other state counted and empty
    states = ("cancelled", "deferred", "failed", "queued", "running", "scheduled")
    assert 'asyncsched_queue_jobs{queue="default",state="success"} 1' in lines
    for state in states:
        assert f'asyncsched_queue_jobs{{queue="default",state="{state}"}} 0' in lines, state
    assert 'asyncsched_executions{status="success"} 1' in lines
    for state in states:
        assert f'asyncsched_executions{{status="{state}"}} 0' in lines, state
    assert 'asyncsched_http_requests_total{operation="health",code="200"} 1' in text
    # the worker and scheduler inside `asyncsched run`: job histograms, tick lag; the bus: delivery lag
    run_count = [v for k, v in samples(text).items() if k.startswith("asyncsched_job_run_seconds_count{")]
    assert run_count == [1.0]
    assert (
        samples(text)[
            'asyncsched_jobs_total{queue="default",function="tests.web.webtasks.add",outcome="success"}'
        ]
        == 1
    )
    assert "# TYPE asyncsched_scheduler_tick_lag_seconds histogram" in lines
    assert samples(text)['asyncsched_event_delivery_lag_seconds_count{mode="live"}'] >= 1
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


async def test_jobs_with_rq_dependencies_repeat_and_rate_limit(client: httpx.AsyncClient) -> None:
    parent = (await client.post("/jobs", json={"function": "tests.web.webtasks:add", "delay": 3600})).json()
    child = await client.post(
        "/jobs", json={"function": "tests.web.webtasks:add", "depends_on": [parent["job_id"]]}
    )
    assert child.status_code == 202, child.text
    assert child.json()["status"] == "deferred"  # waits for its (scheduled) parent
    limited = await client.post(
        "/jobs",
        json={
            "function": "tests.web.webtasks:add",
            "delay": 0,
            "repeat": {"times": 1},
            "rate_limit": {"key": "api", "concurrency": 1},
        },
    )
    assert limited.status_code == 202, limited.text
    mixed = await client.post(
        "/jobs", json={"function": "tests.web.webtasks:add", "depends_on": ["x"], "delay": 60}
    )
    assert mixed.status_code == 422
    assert mixed.json()["detail"][0]["loc"] == ["body", "depends_on"]
    bad = await client.post("/jobs", json={"function": "tests.web.webtasks:add", "depends_on": ["no spaces"]})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"][:2] == ["body", "depends_on"]


async def test_history_total_is_counted_up_to_a_cap(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: Any
) -> None:
    """GET /executions counts its total up to COUNT_LIMIT rows: beyond, ``total`` is a lower
    bound and ``total_capped`` says so; a page near the end is counted to it, exactly."""
    from asyncsched.store import TaskExecution, _repository

    monkeypatch.setattr(_repository, "COUNT_LIMIT", 3)
    assert runtime.services is not None
    db = await runtime.services.db()
    async with db.session() as session, session.begin():
        session.add_all(
            [TaskExecution(job_id=f"cap-{i}", queue="capped", status="success") for i in range(6)]
        )
    first = (await client.get("/executions", params={"queue": "capped", "limit": 2})).json()
    assert (len(first["items"]), first["total"], first["total_capped"]) == (2, 3, True)
    last = (await client.get("/executions", params={"queue": "capped", "limit": 2, "offset": 4})).json()
    assert (len(last["items"]), last["total"], last["total_capped"]) == (2, 6, False)
