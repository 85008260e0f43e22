"""Operators' endpoints against a running runtime on every backend: task edit, job requeue/cancel, a
queue's jobs, bulk requeue/delete of failed jobs, pause/resume."""

from __future__ import annotations

from typing import Any

import httpx

from asyncsched.runtime import Runtime

from .conftest import until


async def job_in(
    client: httpx.AsyncClient, job_id: str, status: str, attempt: int = 1
) -> dict[str, Any] | None:
    data: dict[str, Any] = (await client.get(f"/jobs/{job_id}")).json()
    return data if data.get("status") == status and data.get("attempt") == attempt else None


async def test_patch_task(client: httpx.AsyncClient) -> None:
    task = (await client.get("/tasks/yaml_add")).json()
    changed = await client.patch(
        f"/tasks/{task['id']}", json={"schedule": "0 9 * * *", "type": "cron", "description": "edited"}
    )
    assert changed.status_code == 200, changed.text
    data = changed.json()
    assert (data["type"], data["schedule"], data["description"]) == ("cron", "0 9 * * *", "edited")
    assert data["kwargs"] == {"a": 20, "b": 22}  # untouched fields keep their value
    assert data["next_run_at"] is not None
    assert (await client.get(f"/tasks/{task['id']}")).json()["schedule"] == "0 9 * * *"

    bad = await client.patch(f"/tasks/{task['id']}", json={"schedule": "61 * * * *"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "schedule"]
    assert (await client.patch(f"/tasks/{task['id']}", json={"timezone": "Mars/Base"})).status_code == 422
    unknown_field = await client.patch(f"/tasks/{task['id']}", json={"agent_name": "x"})
    assert unknown_field.status_code == 422
    empty = await client.patch(f"/tasks/{task['id']}", json={})
    assert empty.status_code == 422
    assert "at least one field" in empty.text
    denied = await client.patch(f"/tasks/{task['id']}", json={"function": "os:system"})
    assert denied.status_code == 403
    assert (await client.patch("/tasks/nope", json={"description": "x"})).status_code == 404

    other = {"name": "other", "type": "interval", "schedule": "1 hour", "function": "tests.web.webtasks:add"}
    assert (await client.post("/tasks", json=other)).status_code == 201
    clash = await client.patch(f"/tasks/{task['id']}", json={"name": "other"})
    assert clash.status_code == 409
    renamed = await client.patch(f"/tasks/{task['id']}", json={"name": "renamed", "enabled": False})
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["enabled"], renamed.json()["next_run_at"]) == (
        "renamed",
        False,
        None,
    )


async def test_task_overlap_through_the_api(client: httpx.AsyncClient) -> None:
    body = {"name": "ov", "type": "interval", "schedule": "1 hour", "function": "tests.web.webtasks:add"}
    created = await client.post("/tasks", json={**body, "overlap": "queue"})
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["options"]["overlap"] == "queue"
    changed = await client.patch(f"/tasks/{task['id']}", json={"overlap": "allow"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["options"]["overlap"] == "allow"
    default = await client.patch(f"/tasks/{task['id']}", json={"overlap": "skip"})
    assert "overlap" not in default.json()["options"]  # the default is not stored
    bad = await client.post("/tasks", json={**body, "name": "ov2", "overlap": "sometimes"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "overlap"]


async def test_requeue_and_cancel_one_job(client: httpx.AsyncClient, runtime: Runtime) -> None:
    job_id = (await client.post("/jobs", json={"function": "tests.web.webtasks:boom"})).json()["job_id"]
    failed = await until(lambda: job_in(client, job_id, "failed"), runtime)
    assert "ValueError: boom" in failed["traceback"]
    assert failed["error"] == "ValueError: boom"

    requeued = await client.post(f"/jobs/{job_id}/requeue")
    assert requeued.status_code == 200, requeued.text
    assert requeued.json() == {"job_id": job_id, "status": "queued"}
    await until(lambda: job_in(client, job_id, "failed", attempt=2), runtime)

    ok = (await client.post("/jobs", json={"function": "tests.web.webtasks:add"})).json()["job_id"]
    await until(lambda: job_in(client, ok, "success"), runtime)
    assert (await client.post(f"/jobs/{ok}/requeue")).status_code == 409
    assert (await client.post(f"/jobs/{ok}/cancel")).status_code == 409
    assert (await client.post("/jobs/nope/requeue")).status_code == 404
    assert (await client.post("/jobs/nope/cancel")).status_code == 404

    long = (await client.post("/jobs", json={"function": "tests.web.webtasks:wait_long"})).json()["job_id"]
    await until(lambda: job_in(client, long, "running"), runtime)
    cancelled = await client.post(f"/jobs/{long}/cancel")
    assert cancelled.status_code == 200
    await until(lambda: job_in(client, long, "cancelled"), runtime)
    assert (await client.post(f"/jobs/{long}/requeue")).status_code == 200  # cancelled jobs come back too
    await until(lambda: job_in(client, long, "running", attempt=2), runtime)
    assert (await client.post(f"/jobs/{long}/cancel")).status_code == 200


async def test_failed_jobs_in_bulk(client: httpx.AsyncClient, runtime: Runtime) -> None:
    body = {"function": "tests.web.webtasks:boom", "queue": "default"}
    ids = [(await client.post("/jobs", json=body)).json()["job_id"] for _ in range(3)]
    for job_id in ids:
        await until(lambda job_id=job_id: job_in(client, job_id, "failed"), runtime)

    page = (await client.get("/queues/default/jobs", params={"status": "failed", "limit": 2})).json()
    assert page["total"] == 3
    assert len(page["items"]) == 2
    assert {j["id"] for j in page["items"]} <= set(ids)
    second = (await client.get("/queues/default/jobs", params={"status": "failed", "offset": 2})).json()
    assert len(second["items"]) == 1
    assert (await client.get("/queues/default/jobs", params={"status": "lost"})).status_code == 422
    assert (await client.get("/queues/bad name/jobs")).status_code == 422

    requeued = (await client.post("/queues/default/failed/requeue")).json()
    assert requeued["count"] == 3
    assert sorted(requeued["job_ids"]) == sorted(ids)
    for job_id in ids:
        await until(lambda job_id=job_id: job_in(client, job_id, "failed", attempt=2), runtime)

    deleted = await client.delete("/queues/default/failed")
    assert deleted.status_code == 200
    assert deleted.json()["count"] == 3
    for job_id in ids:
        assert (await client.get(f"/jobs/{job_id}")).status_code == 404
    assert (await client.get("/queues/default/jobs", params={"status": "failed"})).json()["total"] == 0


async def test_pause_and_resume_a_queue(client: httpx.AsyncClient, runtime: Runtime) -> None:
    paused = await client.post("/queues/default/pause")
    assert paused.json() == {"name": "default", "paused": True, "changed": True}
    assert (await client.post("/queues/default/pause")).json()["changed"] is False
    job_id = (await client.post("/jobs", json={"function": "tests.web.webtasks:add"})).json()["job_id"]
    queues = {q["name"]: q for q in (await client.get("/queues")).json()["items"]}
    assert queues["default"]["paused"] is True
    assert queues["default"]["counts"]["queued"] == 1

    # The runtime's worker is idle and listening: once resumed, it takes the job it left waiting.
    assert (await client.get(f"/jobs/{job_id}")).json()["status"] == "queued"
    resumed = await client.post("/queues/default/resume")
    assert resumed.json() == {"name": "default", "paused": False, "changed": True}
    await until(lambda: job_in(client, job_id, "success"), runtime)
    queues = {q["name"]: q for q in (await client.get("/queues")).json()["items"]}
    assert queues["default"]["paused"] is False

    emptied = await client.post("/queues/default/pause")
    assert emptied.status_code == 200
    waiting = [
        (await client.post("/jobs", json={"function": "tests.web.webtasks:add"})).json() for _ in range(2)
    ]
    removed = await client.delete("/queues/default/jobs")
    assert removed.json()["count"] == 2
    for job in waiting:
        assert (await client.get(f"/jobs/{job['job_id']}")).status_code == 404
    await client.post("/queues/default/resume")


async def test_patch_is_refused_cross_origin(client: httpx.AsyncClient) -> None:
    response = await client.patch(
        "/tasks/yaml_add", json={"description": "x"}, headers={"origin": "http://evil.example"}
    )
    assert response.status_code == 403


async def test_metrics_show_overdue_ticks_and_recorder_backlog(client: httpx.AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    assert "\nasyncsched_scheduler_ticks_overdue " in text
    assert "\nasyncsched_scheduler_overdue_seconds " in text
