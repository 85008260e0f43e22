"""Every entry point migrates a database that is not migrated (PostgreSQL included), and operational
errors are one line, not a traceback (``--debug`` shows it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asyncsched.cli._errors import MISSING_SCHEMA_HINT, report
from asyncsched.config import Settings, set_settings
from asyncsched.store import Database

from ..web.procs import clean_env

SRC = str(Path(__file__).resolve().parents[2] / "src")
FUNCTION = "tests.scheduler.conftest:jobs_fn"


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=clean_env(PYTHONPATH=SRC, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def revision(url: str) -> str | None:
    async with Database(url, auto_migrate=False) as db:
        return await db.current_revision()


@pytest.mark.slow
async def test_asyncsched_scheduler_migrates_an_unmigrated_postgres(
    tmp_path: Path, real_database_url: str, real_redis_url: str
) -> None:
    assert await revision(real_database_url) is None
    done = run(
        ["asyncsched", "scheduler", "--for", "0.5"],
        tmp_path,
        REDIS_URL=real_redis_url,
        DATABASE_URL=real_database_url,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert await revision(real_database_url) == Database.head_revision()


def test_sync_register_task_migrates_an_unmigrated_postgres(
    real_database_url: str, real_redis_url: str
) -> None:
    from asyncsched.sync import TaskScheduler

    set_settings(Settings(redis_url=real_redis_url, database_url=real_database_url))
    try:
        with TaskScheduler() as scheduler:
            task = scheduler.register_task(name="t", type="interval", schedule="1 hour", function=FUNCTION)
            assert scheduler.get_task("t").id == task.id
    finally:
        set_settings(None)


def test_init_db_migrates_like_db_upgrade(real_database_url: str) -> None:
    import asyncio

    import asyncsched

    asyncsched.init_db(real_database_url)
    assert asyncio.run(revision(real_database_url)) == Database.head_revision()
    asyncsched.init_db(real_database_url)  # again: nothing to do


@pytest.mark.parametrize(
    "args",
    [
        ["asyncsched", "tasks", "list"],
        ["asyncsched", "scheduler", "--for", "0.1"],
        ["asyncsched.worker", "--with-scheduler", "--burst"],
    ],
)
def test_an_unreachable_database_is_one_line(tmp_path: Path, args: list[str]) -> None:
    url = "postgresql+asyncpg://nobody:secret@127.0.0.1:1/nowhere"
    done = run(args, tmp_path, DATABASE_URL=url, REDIS_URL="memory://")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    assert "127.0.0.1:1" in errors[0]
    assert "secret" not in done.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://nobody@127.0.0.1:1/nowhere"
    done = run(["asyncsched", "--debug", "tasks", "list"], tmp_path, DATABASE_URL=url, REDIS_URL="memory://")
    assert done.returncode == 2
    assert "Traceback" in done.stderr


def test_backend_errors_are_summarised_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy.exc import ProgrammingError

    exc = ProgrammingError(
        "SELECT ...", {}, Exception('relation "asyncsched_scheduled_tasks" does not exist\nLINE 1: ...')
    )
    assert report(exc, "asyncsched", debug=False) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert MISSING_SCHEMA_HINT in err
    assert "--debug shows the traceback" in err
    with pytest.raises(ZeroDivisionError):  # a bug is not an operational error: it keeps its traceback
        report(ZeroDivisionError("bug"), "asyncsched", debug=False)


def test_a_lone_operational_error_in_a_task_group_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    group = ExceptionGroup("unhandled errors in a TaskGroup", [ConnectionRefusedError("connect failed")])
    assert report(group, "asyncsched", debug=False) == 2
    assert "ConnectionRefusedError: connect failed" in capsys.readouterr().err


async def test_the_mounted_router_migrates_an_unmigrated_postgres(
    real_database_url: str, real_redis_url: str
) -> None:
    """The router mounted in someone else's app builds its services lazily; its first request migrates."""
    import httpx
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from asyncsched.web import create_router
    from asyncsched.web._services import Services

    assert await revision(real_database_url) is None
    services = Services(Settings(redis_url=real_redis_url, database_url=real_database_url))
    router = create_router(services)
    app = Starlette(routes=[Mount("/api/scheduler", app=router)])
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            answer = await client.get("/api/scheduler/tasks")
        assert answer.status_code == 200, answer.text
        assert answer.json()["items"] == []
        assert await revision(real_database_url) == Database.head_revision()
    finally:
        await services.aclose()
