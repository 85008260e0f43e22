"""Entry points of the spec's deployment: the worker's control plane (flags, defaults, replicas),
``asyncsched.lifespan``, ``asyncsched run`` finding ``./tasks.yaml``, and loud ``memory://`` warnings."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi import FastAPI

import asyncsched
from asyncsched._control import ControlPlane
from asyncsched.config import Settings
from asyncsched.exceptions import ConfigurationError
from asyncsched.store import Database, ExecutionRepository
from asyncsched.worker import _cli

from ..waiting import eventually
from ..web.procs import Process, clean_env

SRC = str(Path(__file__).resolve().parents[2] / "src")

TASKS = textwrap.dedent(
    """
    tasks:
      - name: ping
        type: interval
        schedule: "1 second"
        function: "spectasks:ping"
        kwargs: {n: 21}
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "spectasks.py").write_text("def ping(n: int = 1) -> int:\n    return n * 2\n")
    (tmp_path / "tasks.yaml").write_text(TASKS)
    return tmp_path


def parse(argv: list[str], *, with_scheduler: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    _cli.add_arguments(parser, with_scheduler=with_scheduler)
    return parser.parse_args(argv)


def plane(argv: list[str], *, with_scheduler: bool) -> ControlPlane | None:
    settings = Settings(redis_url="memory://flags")
    worker = _cli.Worker(settings=settings)
    return _cli._control_plane(parse(argv, with_scheduler=with_scheduler), settings, worker)


def test_spec_form_runs_the_control_plane_by_default_and_the_cli_form_does_not() -> None:
    spec = plane([], with_scheduler=True)  # python -m asyncsched.worker
    assert spec is not None
    assert (spec.run_scheduler, spec.history, spec.events) == (True, True, True)
    assert plane([], with_scheduler=False) is None  # asyncsched worker: lean, like `rq worker`
    explicit = plane(["--with-scheduler"], with_scheduler=False)
    assert explicit is not None
    assert explicit.run_scheduler
    assert plane(["--no-scheduler"], with_scheduler=True) is None
    assert plane(["--burst"], with_scheduler=True) is None  # a burst worker exits when idle
    partial = plane(["--with-scheduler", "--no-events"], with_scheduler=False)
    assert partial is not None
    assert (partial.run_scheduler, partial.history, partial.events) == (
        True,
        True,
        False,
    )
    history_only = plane(["--history"], with_scheduler=False)
    assert history_only is not None
    assert not history_only.run_scheduler
    assert history_only.history


def test_tasks_without_the_scheduler_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigurationError, match="--tasks needs the scheduler in this process"):
        plane(["--no-scheduler", "--tasks", "tasks.yaml"], with_scheduler=True)
    with pytest.raises(SystemExit):  # argparse: mutually exclusive
        parse(["--with-scheduler", "--no-scheduler"], with_scheduler=True)


@pytest.mark.slow
async def test_replicated_workers_with_scheduler_run_each_tick_once(
    project: Path, real_redis_url: str
) -> None:
    """Three spec-form workers (each a scheduler, recorder and publisher) on one Redis: every tick is one
    job, run once and recorded once."""
    database_url = f"sqlite+aiosqlite:///{project}/replicas.db"
    env = clean_env(REDIS_URL=real_redis_url, DATABASE_URL=database_url, PYTHONPATH=SRC)
    argv = [sys.executable, "-m", "asyncsched.worker", "--tasks", "tasks.yaml", "--agent", "ops", "-c", "4"]
    workers = [Process(argv, project, env) for _ in range(3)]
    try:
        for worker in workers:
            worker.expect("control plane running in this process: scheduler, history, events")
        async with Database(settings=Settings(database_url=database_url)) as db:
            repo = ExecutionRepository(db)

            async def enough() -> list[object] | None:
                page = await repo.list(limit=100)
                done = [e for e in page.items if e.task_name == "ping" and e.status == "success"]
                return done if len(done) >= 4 else None

            done = await eventually(enough, timeout=90, what="four recorded runs of ping")
            job_ids = [e.job_id for e in done]  # type: ignore[attr-defined]
            assert len(job_ids) == len(set(job_ids)), job_ids  # one row per tick
            assert all(e.attempt == 1 and e.result == 42 for e in done)  # type: ignore[attr-defined]
            ticks = sorted(int(j.rsplit("-", 1)[1]) for j in job_ids)
            assert len(ticks) == len(set(ticks))  # each tick fired by one replica only
        for worker in workers:
            worker.proc.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.proc.wait(60) == 0
    finally:
        for worker in workers:
            worker.stop()


async def test_lifespan_runs_scheduler_recorder_and_worker_inside_the_app(
    tmp_path: Path, project: Path
) -> None:
    sys.path.insert(0, str(project))
    settings = Settings(redis_url="memory://lifespan", database_url=f"sqlite+aiosqlite:///{tmp_path}/l.db")
    app = FastAPI(
        lifespan=asyncsched.lifespan(
            settings=settings, tasks=project / "tasks.yaml", agent="app", worker=True
        )
    )
    try:
        async with app.router.lifespan_context(app), Database(settings=settings) as db:
            repo = ExecutionRepository(db)

            async def ran() -> bool:
                page = await repo.list(status="success")
                return any(e.task_name == "ping" and e.result == 42 for e in page.items)

            await eventually(ran, timeout=30, what="a recorded run of ping fired inside the app")
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("spectasks", None)


async def test_lifespan_plain_form_enters_as_a_context_manager(tmp_path: Path) -> None:
    settings = Settings(redis_url="memory://lifespan2", database_url=f"sqlite+aiosqlite:///{tmp_path}/l.db")
    from asyncsched.config import set_settings

    set_settings(settings)
    try:
        async with asyncsched.lifespan(FastAPI()), Database(settings=settings) as db:
            assert await db.current_revision() == Database.head_revision()
    finally:
        set_settings(None)


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=clean_env(PYTHONPATH=SRC, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_asyncsched_run_loads_tasks_yaml_of_the_working_directory(project: Path) -> None:
    done = run_cli(["asyncsched", "run", "--no-http", "--for", "0.5"], project)
    assert done.returncode == 0, done.stderr
    assert "loading ./tasks.yaml (found in the working directory" in done.stderr
    assert "loaded 1 task(s) from tasks.yaml" in done.stderr
    elsewhere = run_cli(["asyncsched", "run", "--no-http", "--for", "0.1"], project / "..")
    assert "loading ./tasks.yaml" not in elsewhere.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["asyncsched.worker", "--burst"],
        ["asyncsched", "worker", "--burst"],
        ["asyncsched", "scheduler", "--for", "0.1"],
    ],
)
def test_separate_processes_on_memory_warn_loudly(project: Path, args: list[str]) -> None:
    done = run_cli(args, project)
    assert done.returncode == 0, done.stderr
    assert "REDIS_URL is memory://, a Redis that lives inside this process only" in done.stderr
    assert "Set REDIS_URL" in done.stderr


def test_asyncsched_run_on_memory_does_not_warn(project: Path) -> None:
    done = run_cli(["asyncsched", "run", "--no-http", "--for", "0.1"], project)
    assert done.returncode == 0, done.stderr
    assert "lives inside this process only" not in done.stderr


async def test_lifespan_with_an_unreachable_redis_fails_in_one_line(tmp_path: Path) -> None:
    from asyncsched.exceptions import BackendUnavailable

    settings = Settings(
        redis_url="redis://127.0.0.1:1/0", database_url=f"sqlite+aiosqlite:///{tmp_path}/l.db"
    )
    with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:1"):
        async with asyncsched.lifespan(settings=settings)(FastAPI()):
            pass
