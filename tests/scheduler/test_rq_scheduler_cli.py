"""``asyncsched tasks list`` shows rq-scheduler's jobs; ``asyncsched tasks import --from-rq-scheduler`` turns
them into tasks (dry run, disabled beside rq-scheduler, or switched over with ``--remove``)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import redis as syncredis
import yaml
from rq_scheduler import Scheduler

from asyncsched.config import Settings
from asyncsched.scheduler import TaskScheduler, validate_file
from asyncsched.store import Database

ROOT = Path(__file__).resolve().parents[2]
SET = "rq:scheduler:scheduled_jobs"


def _cli(*args: str, redis_url: str, database_url: str, tz: str = "UTC") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "TZ": tz}
    return subprocess.run(
        [sys.executable, "-m", "asyncsched", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _jobs(url: str) -> dict[str, float]:
    conn = syncredis.Redis.from_url(url)
    s = Scheduler(connection=conn, queue_name="mail")
    start = datetime.utcnow() + timedelta(hours=1)
    s.schedule(start, "tests.jobs.add", args=[1, 2], interval=3600, repeat=5, id="hourly", timeout=30)
    s.cron("0 9 * * 1-5", "tests.jobs.echo", kwargs={"to": "ops"}, id="weekday-digest")
    s.enqueue_at(start, "tests.jobs.echo", "once", job_id="one-shot")
    s.schedule(start, "tests.jobs.echo", args=[object.__new__(Settings)], interval=60, id="opaque-args")
    scores = {m.decode(): sc for m, sc in conn.zrange(SET, 0, -1, withscores=True)}
    conn.close()
    return scores


def test_list_and_dry_run(real_redis_url: str, tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/t.db"
    scores = _jobs(real_redis_url)
    listing = _cli("tasks", "list", redis_url=real_redis_url, database_url=db)
    assert listing.returncode == 0, listing.stderr
    assert "rq-scheduler's jobs (4; fired by asyncsched's scheduler too):" in listing.stdout
    lines = {line.split()[0]: line for line in listing.stdout.splitlines() if line.strip()}
    assert "every 3600 s, 5 run(s) left" in lines["hourly"]
    assert "0 9 * * 1-5" in lines["weekday-digest"]
    assert " once " in lines["one-shot"]
    assert "tests.jobs.add" in lines["hourly"]

    dry = _cli(
        "tasks", "import", "--from-rq-scheduler", "--dry-run", "--timezone", "Europe/Berlin",
        redis_url=real_redis_url, database_url=db,
    )  # fmt: skip
    assert dry.returncode == 1  # one job could not be imported, and says why
    assert "rq-scheduler job opaque-args is not imported" in dry.stderr
    assert "not plain JSON/YAML data" in dry.stderr or "only plain data" in dry.stderr
    tasks = {t["name"]: t for t in yaml.safe_load(dry.stdout)["tasks"]}
    hourly = dict(tasks["hourly"])
    start = datetime.fromisoformat(hourly.pop("start"))
    assert start.timestamp() == scores["hourly"]  # the next run stays where rq-scheduler had it
    assert hourly == {
        "name": "hourly",
        "description": "tests.jobs.add(1, 2)",
        "enabled": False,
        "type": "interval",
        "schedule": "1 hour",
        "function": "tests.jobs:add",
        "args": [1, 2],
        "kwargs": {},
        "queue": "mail",
        "timeout": 30,
    }
    assert "repeat: 5 run(s) left - NOT carried over" in dry.stdout
    assert tasks["weekday-digest"]["type"] == "cron"
    assert tasks["weekday-digest"]["timezone"] == "Europe/Berlin"
    assert tasks["one-shot"]["type"] == "date"
    assert datetime.fromisoformat(tasks["one-shot"]["schedule"]).timestamp() == scores["one-shot"]
    printed = tmp_path / "printed.yaml"
    printed.write_text(dry.stdout)
    assert validate_file(printed, "a")[1] == []  # what it prints is a valid tasks file
    conn = syncredis.Redis.from_url(real_redis_url)
    assert conn.zcard(SET) == 4  # a dry run changes nothing
    conn.close()
    assert not (ROOT / "tasks-rq-scheduler.yaml").exists()


async def test_import_then_switch_over_with_remove(real_redis_url: str, tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/t.db"
    _jobs(real_redis_url)
    out_file = tmp_path / "rq.yaml"
    first = _cli(
        "tasks", "import", "--from-rq-scheduler", "-o", str(out_file), "--agent", "mail",
        redis_url=real_redis_url, database_url=db,
    )  # fmt: skip
    assert first.returncode == 1, first.stderr  # opaque-args
    assert "registered 3 task(s) for agent mail" in first.stdout
    conn = syncredis.Redis.from_url(real_redis_url)
    assert conn.zcard(SET) == 4  # rq-scheduler keeps its jobs: ours wait, disabled
    async with Database(db) as database, TaskScheduler(real_redis_url, db=database) as s:
        tasks = {t.name: t for t in await s.list_tasks("mail")}
        assert set(tasks) == {"hourly", "weekday-digest", "one-shot"}
        assert not any(t.enabled for t in tasks.values())
    again = _cli(
        "tasks", "import", "--from-rq-scheduler", "-o", str(out_file), "--agent", "mail",
        redis_url=real_redis_url, database_url=db,
    )  # fmt: skip
    assert again.returncode == 2
    assert "exists; pass --force" in again.stderr
    switch = _cli(
        "tasks", "import", "--from-rq-scheduler", "-o", str(out_file), "--agent", "mail", "--remove",
        "--force", redis_url=real_redis_url, database_url=db, tz="Asia/Kolkata",
    )  # fmt: skip
    assert switch.returncode == 1, switch.stderr
    assert "removed 3 job(s) from rq-scheduler's set" in switch.stdout
    assert [m.decode() for m in conn.zrange(SET, 0, -1)] == ["opaque-args"]
    assert conn.exists("rq:scheduler_lock") == 0
    conn.close()
    async with Database(db) as database, TaskScheduler(real_redis_url, db=database) as s:
        tasks = {t.name: t for t in await s.list_tasks("mail")}
        assert all(t.enabled for t in tasks.values())
        assert tasks["weekday-digest"].timezone == "Asia/Kolkata"  # the machine's zone, as rqscheduler
        assert tasks["hourly"].source == str(out_file)


def test_a_failed_registration_puts_the_jobs_back(real_redis_url: str, tmp_path: Path) -> None:
    conn = syncredis.Redis.from_url(real_redis_url)
    Scheduler(connection=conn).schedule(datetime.utcnow(), "no_such_module.task", interval=60, id="gone")
    before = conn.zscore(SET, "gone")
    out_file = tmp_path / "rq.yaml"
    out = _cli(
        "tasks", "import", "--from-rq-scheduler", "--remove", "-o", str(out_file),
        redis_url=real_redis_url, database_url=f"sqlite+aiosqlite:///{tmp_path}/t.db",
    )  # fmt: skip
    assert out.returncode == 2
    assert "cannot import module 'no_such_module'" in out.stderr
    assert conn.zscore(SET, "gone") == before  # back in rq-scheduler's set, at the same time
    assert not out_file.exists()
    assert conn.exists("rq:scheduler_lock") == 0
    conn.close()
