"""The scale-out shape: a lean `asyncsched worker` beside an `asyncsched scheduler` control plane.

The scheduler process fires the tasks and, by default, also records job history into SQL and publishes the
`task.*` lifecycle events; the worker only runs jobs. Both are real processes on a real Redis.
"""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path

import pytest

from asyncsched.config import Settings
from asyncsched.events import EventBus
from asyncsched.store import Database, ExecutionRepository

from .waiting import eventually
from .web.procs import Process, clean_env

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "opstasks.py").write_text("def ping(n: int = 1) -> int:\n    return n * 2\n")
    (tmp_path / "tasks.yaml").write_text(
        textwrap.dedent(
            """
            tasks:
              - name: ping
                type: interval
                schedule: "1 second"
                function: "opstasks:ping"
                kwargs: {n: 21}
            """
        )
    )
    return tmp_path


async def test_scheduler_records_history_and_publishes_events_for_a_lean_worker(
    project: Path, real_redis_url: str
) -> None:
    database_url = f"sqlite+aiosqlite:///{project}/ops.db"
    env = clean_env(REDIS_URL=real_redis_url, DATABASE_URL=database_url)
    async with EventBus(real_redis_url, agent_name="*") as bus:
        assert await bus.listen(timeout=0) is None  # subscribed from here on
        scheduler = Process(
            [sys.executable, "-m", "asyncsched", "scheduler", "--tasks", "tasks.yaml", "--agent", "ops"],
            project,
            env,
        )
        worker = Process([sys.executable, "-m", "asyncsched", "worker", "-c", "4"], project, env)
        try:
            scheduler.expect("recording job history into")
            worker.expect("listening on default")

            async def completed() -> bool:
                event = await bus.listen(timeout=1)
                return bool(
                    event and event.event_type == "task.completed" and event.payload["task_name"] == "ping"
                )

            await eventually(completed, timeout=60, what="task.completed of ping")

            async with Database(settings=Settings(database_url=database_url)) as db:
                repo = ExecutionRepository(db)

                async def recorded() -> bool:
                    page = await repo.list(status="success")
                    return any(e.task_name == "ping" and e.result == 42 for e in page.items)

                await eventually(recorded, timeout=60, what="a successful ping in the history")
            for proc in (worker, scheduler):
                proc.proc.send_signal(signal.SIGTERM)
            assert worker.proc.wait(60) == 0
            assert scheduler.proc.wait(60) == 0
        finally:
            worker.stop()
            scheduler.stop()
