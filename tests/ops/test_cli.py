"""The operator commands (``info``, ``enqueue``, ``jobs``, ``queues``, ``tasks``) on a real redis-server:
their output, ``--json`` and exit codes (0 done, 1 refused, 2 usage, 3 unavailable, 4 not found)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from asyncsched.config import Settings
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.scheduler import TaskScheduler
from asyncsched.store import Database
from asyncsched.testing import run_burst
from asyncsched.worker import Worker
from tests import jobs
from tests.waiting import eventually

from .conftest import Cli


async def running(queue: TaskQueue, job_id: str) -> bool:
    return await queue.status(job_id) == JobStatus.RUNNING


async def test_info_shows_queues_workers_and_scheduler(
    cli: Cli, queue: TaskQueue, ops_settings: Settings
) -> None:
    await queue.enqueue(jobs.fail, queue="low")
    await run_burst(["low"], settings=ops_settings)
    await queue.enqueue(jobs.add, args=(1, 2), queue="low")
    await queue.pause("low")
    long = await queue.enqueue(jobs.async_sleep, args=(60,), queue="high")
    async with Worker(["high"], settings=ops_settings, name="cli-test-worker") as worker:
        task = asyncio.create_task(worker.run())
        await eventually(lambda: running(queue, long), what="the job to start")
        data = await cli.json("info")
        text = await cli("info")
        worker.request_stop()
        await queue.cancel(long)
        await task
    assert data["redis"]["status"] == "ok"
    assert data["redis"]["version"]
    assert data["redis"]["history_lost"] == {"lost": 0, "last_loss_at": None}
    assert data["database"]["status"] == "ok"
    queues = {q["name"]: q for q in data["queues"]}
    assert queues["low"]["paused"] is True
    assert (queues["low"]["counts"]["failed"], queues["low"]["counts"]["queued"]) == (1, 1)
    assert queues["high"]["counts"]["running"] == 1
    (listed,) = data["workers"]
    assert (listed["name"], listed["current_jobs"], listed["queues"]) == ("cli-test-worker", [long], ["high"])
    assert data["schedulers"]["ticks_overdue"] == 0
    assert text.returncode == 0
    assert "cli-test-worker" in text.stdout
    assert "history:  0 lifecycle records lost" in text.stdout
    assert long in text.stdout
    low_line = next(line for line in text.stdout.splitlines() if line.startswith("low "))
    assert low_line.split()[-1] == "yes"  # PAUSED column


async def test_info_refreshes_and_reports_an_unhealthy_backend(cli: Cli, ops_settings: Settings) -> None:
    out = await cli("info", "--json", "--interval", "0.1", "--count", "2")
    assert out.returncode == 0, out.stderr
    decoder = json.JSONDecoder()
    first, end = decoder.raw_decode(out.stdout)
    second, _ = decoder.raw_decode(out.stdout[end:].lstrip())
    assert first["redis"]["status"] == second["redis"]["status"] == "ok"

    # the real entry point, in its own process
    down = Cli(ops_settings.replace(redis_url="redis://:secret@127.0.0.1:1/0"), subprocess=True)
    out = await down("info")
    assert out.returncode == 3
    assert "127.0.0.1:1" in out.stderr
    assert "secret" not in out.stdout + out.stderr
    assert "database: sqlite" in out.stdout  # what does answer is still reported
    assert (await down("info", "--interval", "0")).returncode == 2


async def test_enqueue_and_show_a_job(cli: Cli, queue: TaskQueue, ops_settings: Settings) -> None:
    out = await cli.json(
        "enqueue", "tests.jobs:echo", "--args", "[1, 2]", "--kwargs", '{"x": "y"}', "--queue", "q1"
    )
    assert (out["queue"], out["status"]) == ("q1", "queued")
    job_id = out["job_id"]
    await run_burst(["q1"], settings=ops_settings)
    shown = await cli.json("jobs", "show", job_id)
    assert (shown["status"], shown["args"], shown["kwargs"]) == ("success", [1, 2], {"x": "y"})
    assert shown["result"] == {"args": [1, 2], "kwargs": {"x": "y"}}
    plain = await Cli(ops_settings, subprocess=True)("enqueue", "tests.jobs:add", "--args", "[2, 3]")
    assert plain.returncode == 0
    assert (await queue.job(plain.stdout.strip())).args == [2, 3]

    bad = await cli("enqueue", "tests.jobs:add", "--args", "{not json")
    assert bad.returncode == 2
    assert "--args" in bad.stderr
    assert "invalid JSON" in bad.stderr
    assert (await cli("enqueue", "tests.jobs:add", "--kwargs", "[1]")).returncode == 2
    assert (await cli("enqueue", "no-colon-or-dot")).returncode == 2
    missing = await cli("jobs", "show", "nope")
    assert missing.returncode == 4
    assert "nope" in missing.stderr


async def test_failed_jobs_list_requeue_and_cancel(
    cli: Cli, queue: TaskQueue, ops_settings: Settings
) -> None:
    failed = await queue.enqueue(jobs.fail, args=("kaput",))
    ok = await queue.enqueue(jobs.add, args=(1, 1))
    await run_burst(settings=ops_settings)

    listed = await cli.json("jobs", "list", "--failed")
    assert [j["id"] for j in listed["items"]] == [failed]
    assert listed["total"] == 1
    assert listed["items"][0]["error"] == "ValueError: kaput"
    table = await cli("jobs", "list", "--failed")
    assert failed in table.stdout
    assert "ValueError: kaput" in table.stdout
    shown = await cli("jobs", "show", failed)
    assert "traceback:" in shown.stdout
    assert "ValueError: kaput" in shown.stdout

    assert (await cli.json("jobs", "requeue", failed))["results"] == {failed: "queued"}
    assert (await queue.job(failed)).attempt == 2
    refused = await cli("jobs", "requeue", ok)
    assert refused.returncode == 1
    assert "only failed or cancelled" in refused.stdout
    assert (await cli("jobs", "requeue", "nope")).returncode == 4

    assert (await cli("jobs", "cancel", failed)).returncode == 0
    assert (await queue.job(failed)).status == JobStatus.CANCELLED
    again = await cli("jobs", "cancel", failed)
    assert again.returncode == 1
    assert "already ended" in again.stdout
    assert (await cli("jobs", "list", "--limit", "0")).returncode == 2
    assert (await cli("jobs")).returncode == 2


async def test_queue_commands(cli: Cli, queue: TaskQueue, ops_settings: Settings) -> None:
    ids = [await queue.enqueue(jobs.fail, queue="w") for _ in range(2)]
    await run_burst(["w"], settings=ops_settings)
    out = await cli.json("queues", "pause", "w")
    assert out["results"]["w"] == {"paused": True, "changed": True}
    listed = (await cli.json("queues", "list"))["items"]
    assert listed == [{"name": "w", "paused": True, "counts": listed[0]["counts"]}]
    assert listed[0]["counts"]["failed"] == 2

    requeued = (await cli.json("queues", "requeue-failed", "w"))["results"]["w"]
    assert sorted(requeued["job_ids"]) == sorted(ids)
    assert (await run_burst(["w"], settings=ops_settings)).processed == 0  # paused: nothing runs
    assert (await cli.json("queues", "empty", "w"))["results"]["w"]["count"] == 2
    assert (await queue.queue_counts())["w"]["queued"] == 0

    await queue.enqueue(jobs.fail, queue="w")
    assert (await cli("queues", "resume", "w")).stdout.strip() == "w: resumed"
    assert (await cli("queues", "resume", "w")).stdout.strip() == "w: was not paused"
    await run_burst(["w"], settings=ops_settings)
    deleted = await cli("queues", "delete-failed", "w")
    assert deleted.stdout.strip() == "w: 1 failed job(s) deleted"
    assert (await cli("queues")).returncode == 2


async def test_task_commands(cli: Cli, database_url: str, real_redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=real_redis_url, database_url=database_url)
    cli = Cli(settings)
    async with Database(settings=settings) as db, TaskScheduler(settings=settings, db=db) as scheduler:
        await db.migrate()
        for name in ("mail", "report"):
            await scheduler.register_task(
                name=name, agent_name="ops", type="interval", schedule="5 minutes", function="tests.jobs:add",
                kwargs={"a": 1, "b": 2},
            )  # fmt: skip
    shown = await cli.json("tasks", "show", "mail")
    assert (shown["name"], shown["schedule"], shown["enabled"]) == ("mail", "5 minutes", True)
    assert len(shown["next_runs"]) == 5
    assert [t["name"] for t in (await cli.json("tasks", "list"))["items"]] == ["mail", "report"]

    assert (await cli.json("tasks", "disable", "mail"))["enabled"] is False
    assert (await cli.json("tasks", "show", "mail"))["next_runs"] == []
    assert (await cli.json("tasks", "enable", "mail"))["enabled"] is True
    run = await cli.json("tasks", "run", "mail")
    async with TaskQueue(settings=settings) as queue:
        assert (await queue.job(run["job_id"])).task_name == "mail"

    edited = await cli.json(
        "tasks", "edit", "mail", "--type", "cron", "--schedule", "0 9 * * *", "--kwargs", "{}"
    )
    assert (edited["type"], edited["schedule"], edited["kwargs"]) == ("cron", "0 9 * * *", {})
    bad = await cli("tasks", "edit", "mail", "--schedule", "61 * * * *")
    assert bad.returncode == 2
    assert "schedule" in bad.stderr
    clash = await cli("tasks", "edit", "mail", "--name", "report")
    assert clash.returncode == 1
    assert "already exists" in clash.stderr
    assert (await cli("tasks", "edit", "mail")).returncode == 2
    assert (await cli("tasks", "show", "nope")).returncode == 4
