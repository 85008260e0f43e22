"""Issue 17 end to end: ``asyncsched run --hooks`` in a user's project, a job reporting progress through the
API, and the dashboard's job detail showing it, in a real headless Chromium."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import asyncsched

from ..servers import free_port
from .cdp import chromium_page
from .procs import Process, clean_env

APP = """
import asyncsched


class Hooks:
    def on_startup(self, ctx):
        ctx["greeting"] = "hello from on_startup"


def work():
    job = asyncsched.current_job()
    job.progress({"done": 3, "total": 4})
    job.progress(0.75)
    return job.resources["greeting"]
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Process, str]]:
    (tmp_path / "ctxapp.py").write_text(textwrap.dedent(APP))
    port = free_port()
    env = clean_env(
        PYTHONPATH=str(Path(asyncsched.__file__).parents[1]), ASYNCSCHED_ALLOWED_FUNCTIONS="ctxapp"
    )
    args = [
        sys.executable,
        "-m",
        "asyncsched",
        "run",
        "--port",
        str(port),
        "--for",
        "300",
        "--hooks",
        "ctxapp:Hooks",
    ]
    process = Process(args, tmp_path, env)
    try:
        yield process, f"http://127.0.0.1:{port}/api/scheduler"
    finally:
        process.stop()


async def test_progress_in_api_and_dashboard(served: tuple[Process, str]) -> None:
    process, url = served
    process.expect("asyncsched is running")
    with httpx.Client(base_url=url, timeout=30) as api:
        accepted = api.post("/jobs", json={"function": "ctxapp:work"})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        deadline = time.monotonic() + 60
        while (job := api.get(f"/jobs/{job_id}").json())["status"] != "success":
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.2)
        assert job["result"] == "hello from on_startup"  # the worker's hooks came from --hooks
        assert job["progress"] == 0.75
    async with chromium_page() as page:
        await page.goto(f"{url}/dashboard")
        await page.wait_for("typeof openJob === 'function'")
        await page.evaluate(f"openJob({job_id!r})")
        await page.wait_for("document.getElementById('job-dialog').open")
        shown = await page.evaluate(
            "document.querySelector('#job-fields dd[data-field=\"progress\"]').textContent"
        )
        assert shown == "75.0 %"
