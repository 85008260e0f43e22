"""``asyncsched tasks list`` and ``asyncsched scheduler`` from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from asyncsched.config import Settings
from asyncsched.scheduler import TaskScheduler
from asyncsched.store import Database

from .conftest import FUNCTION

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": "memory://"}
    return subprocess.run(
        [sys.executable, "-m", "asyncsched", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


async def test_tasks_list_shows_schedule_in_words_and_next_run(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    async with (
        Database(url) as db,
        TaskScheduler("memory://cli", settings=Settings(database_url=url), db=db) as s,
    ):
        await s.register_task(
            name="mail", agent_name="a", type="interval", schedule="5 minutes", function=FUNCTION
        )
        await s.register_task(
            name="report",
            agent_name="b",
            type="cron",
            schedule="0 9 * * *",
            timezone="Europe/Berlin",
            function=FUNCTION,
        )
        await s.disable("report")
    out = _cli("tasks", "list", database_url=url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["AGENT", "NAME", "ENABLED", "SCHEDULE", "NEXT", "RUN", "LAST", "RUN"]
    assert "every 5 minutes [interval '5 minutes']" in lines[1]
    assert " UTC" in lines[1]
    assert "at 09:00 every day (Europe/Berlin)" in lines[2]
    assert "(disabled)" in lines[2]
    only_a = _cli("tasks", "list", "--agent", "a", database_url=url)
    assert len(only_a.stdout.splitlines()) == 2


def test_scheduler_refuses_an_invalid_tasks_file(tmp_path: Path) -> None:
    bad = tmp_path / "tasks.yaml"
    bad.write_text(
        "tasks:\n  - name: x\n    type: cron\n    schedule: '99 * * * *'\n    function: 'json:dumps'\n"
    )
    out = _cli(
        "scheduler", "--tasks", str(bad), "--for", "1", database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"
    )
    assert out.returncode == 2
    assert f"{bad}:4, task 'x', field 'schedule'" in out.stderr


async def test_scheduler_process_announces_startup_and_shutdown(real_redis_url: str, tmp_path: Path) -> None:
    """`asyncsched scheduler` publishes system.startup and system.shutdown for other agents to react to."""
    from asyncsched.events import EventBus

    url = f"sqlite+aiosqlite:///{tmp_path}/sys.db"
    async with EventBus(real_redis_url, agent_name="*") as bus:
        assert await bus.listen(timeout=0) is None  # the bus is subscribed from here on
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": real_redis_url}
        proc = subprocess.Popen(
            [sys.executable, "-m", "asyncsched", "scheduler", "--agent", "ops", "--for", "1"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seen = [await bus.listen(timeout=60), await bus.listen(timeout=60)]
        seen = [e for e in seen if e is None or e.event_type.startswith("system.")]
        assert proc.wait(60) == 0
    assert [e.event_type if e else None for e in seen] == ["system.startup", "system.shutdown"]
    assert {e.payload["component"] for e in seen if e} == {"scheduler"}
    assert seen[0] is not None
    assert seen[0].source_agent == "ops"
