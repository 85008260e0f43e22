"""rq-scheduler's jobs under ``asyncsched run`` (a Runtime): listed by ``GET /rq-scheduler/jobs``, fired by
its scheduler, run by its worker, and each run in ``GET /executions`` as rq-scheduler's."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from rq_scheduler import Scheduler
from starlette.applications import Starlette
from starlette.routing import Mount

from asyncsched.config import Settings
from asyncsched.runtime import Runtime
from asyncsched.web import create_router

from ..rqhelp import sync_redis
from .conftest import PREFIX, client_for, until, write_tasks


async def test_rq_scheduler_jobs_are_listed_fired_and_in_the_history(
    web_settings: Settings, tmp_path: Path
) -> None:
    settings = web_settings.replace(accept_pickle=True)  # rq-scheduler's jobs are pickled (RQ's default)
    conn = sync_redis(settings.redis_url)
    s = Scheduler(connection=conn)
    s.schedule(
        datetime.utcnow(), "tests.web.webtasks.add", kwargs={"a": 1, "b": 2}, interval=1, repeat=2, id="x2"
    )
    s.cron("0 9 * * *", "tests.web.webtasks.shout", id="daily")
    tasks = write_tasks(tmp_path / "tasks.yaml")
    async with Runtime(settings, tasks_files=[tasks], http=False) as rt:
        assert rt.services is not None
        app = Starlette(routes=[Mount(PREFIX, create_router(rt.services))])
        async with client_for(app) as client:
            listing = (await client.get("/rq-scheduler/jobs")).json()
            items = {j["id"]: j for j in listing["items"]}
            assert items["daily"]["source"] == "rq-scheduler"
            assert (items["daily"]["kind"], items["daily"]["cron_string"]) == ("cron", "0 9 * * *")
            assert items["daily"]["problem"] is None
            assert listing["rqscheduler_instances"] == []

            async def two_runs() -> Any:
                page = (await client.get("/executions", params={"agent": "rq-scheduler"})).json()
                done = [e for e in page["items"] if e["job_id"] == "x2" and e["status"] == "success"]
                return done if len(done) == 2 else None

            runs = await until(two_runs, rt)
            assert sorted(e["attempt"] for e in runs) == [1, 2]
            assert {(e["task_name"], e["function"], e["result"]) for e in runs} == {
                ("x2", "tests.web.webtasks.add", 3)
            }
            after = {j["id"] for j in (await client.get("/rq-scheduler/jobs")).json()["items"]}
            assert after == {"daily"}  # repeats used up: gone from rq-scheduler's set
    conn.close()


async def test_dashboard_lists_rq_scheduler_jobs(tmp_path: Path) -> None:
    """In a real headless Chromium: rq-scheduler's schedules follow the tasks, marked, with the reason when
    one is not fired."""
    from asyncsched._redis import reset_memory_servers

    from .cdp import chromium_page
    from .conftest import RuntimeThread

    reset_memory_servers()
    settings = Settings(
        redis_url="memory://rq-dashboard", database_url=f"sqlite+aiosqlite:///{tmp_path}/d.db"
    )
    conn = sync_redis(settings.redis_url)
    s = Scheduler(connection=conn)
    s.cron("0 9 * * *", "tests.web.webtasks.shout", id="daily-shout")
    s.schedule(datetime.utcnow(), "tests.web.webtasks.add", interval=60, id="no-origin")
    conn.hdel("rq:job:no-origin", "origin")
    try:
        with RuntimeThread(settings, [write_tasks(tmp_path / "tasks.yaml")]) as server:
            async with chromium_page() as page:
                await page.goto(f"{server.url}/dashboard")
                rows = "document.querySelectorAll('#tasks tbody tr[data-source=\"rq-scheduler\"]')"
                await page.wait_for(f"{rows}.length === 2")
                cells = await page.evaluate(f"[...{rows}].map(r => [...r.cells].map(c => c.innerText))")
                by_id = {c[0]: c for c in cells}
                assert by_id["daily-shout"][1:5] == [
                    "rq-scheduler",
                    "cron 0 9 * * *",
                    "tests.web.webtasks.shout",
                    "rq-scheduler",
                ]
                assert by_id["no-origin"][4].startswith("not fired: job has no origin")
                assert await page.evaluate(
                    "document.querySelector('#tasks tr[data-name=\"yaml_add\"]') !== null"
                )
    finally:
        conn.close()
        reset_memory_servers()
