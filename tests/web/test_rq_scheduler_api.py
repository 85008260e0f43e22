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
