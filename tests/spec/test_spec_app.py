"""The spec's deployment, as a user runs it: ``examples/spec_app`` (app + ``python -m asyncsched.worker``)
on a real redis-server, nothing else. A schedule fires, its run is recorded and found by job id, and the
``task.*`` events reach a subscriber while the job runs (not when some later process starts)."""

from __future__ import annotations

import shutil
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from asyncsched.events import EventBus

from ..waiting import eventually
from ..web.procs import Process, clean_env

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "spec_app"
SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    target = tmp_path / "spec_app"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("*.db", "__pycache__"))
    return target


async def test_spec_app_and_worker_fire_record_and_publish(project: Path, real_redis_url: str) -> None:
    port = free_port()
    env = clean_env(
        REDIS_URL=real_redis_url,
        DATABASE_URL=f"sqlite+aiosqlite:///{project}/spec.db",
        PORT=str(port),
        PYTHONPATH=str(SRC),
    )
    base = f"http://127.0.0.1:{port}/api/scheduler"
    async with EventBus(real_redis_url, agent_name="*") as bus:
        assert await bus.listen(timeout=0) is None  # subscribed from here on
        runner = Process([sys.executable, "run.py"], project, env)
        try:
            runner.expect("control plane running in this process: scheduler, history, events")

            async def task_registered() -> bool:
                async with httpx.AsyncClient() as client:
                    try:
                        listed = (await client.get(f"{base}/tasks")).json()
                    except httpx.TransportError:
                        return False
                return "process_pending_emails" in {t["name"] for t in listed.get("items", [])}

            await eventually(task_registered, timeout=60, what="the app's startup hook registering tasks")

            job_ids: list[str] = []

            async def completed_while_running() -> bool:
                event = await bus.listen(timeout=1)
                if event is None or event.event_type != "task.completed":
                    return False
                if event.payload["task_name"] != "process_pending_emails":
                    return False
                job_ids.append(event.payload["job_id"])
                return True

            await eventually(completed_while_running, timeout=60, what="task.completed of the email task")

            async def recorded() -> dict[str, object] | None:
                async with httpx.AsyncClient() as client:
                    response = await client.get(f"{base}/executions/{job_ids[0]}")
                return response.json() if response.status_code == 200 else None

            execution = await eventually(recorded, timeout=60, what="GET /executions/{job} finding the run")
            assert execution["status"] == "success"
            assert execution["result"] == {"status": "success", "processed": 10}
            assert execution["task_name"] == "process_pending_emails"
        finally:
            if runner.proc.poll() is None:
                runner.proc.send_signal(signal.SIGINT)
            try:
                assert runner.proc.wait(90) == 0
            finally:
                runner.stop()
