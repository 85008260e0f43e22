"""The dashboard's operator actions in a real headless Chromium against ``asyncsched run`` (served under a
path prefix): failed jobs with details and traceback, requeue and bulk delete behind a confirmation, queue
pause/resume, history filters and server-side paging, the task edit form with the API's validation.

With ``ASYNCSCHED_SCREENSHOTS=DIR`` the test also writes the screenshots used by docs/operations.md.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import asyncsched

from ..servers import free_port
from .cdp import Page, chromium_page
from .procs import Process, clean_env

FAILED_ROWS = "document.querySelectorAll('#failed tbody tr')"


@pytest.fixture
def served(project: Path) -> Iterator[tuple[Process, str]]:
    """``asyncsched run`` in the project directory, running this checkout's code (``clean_env`` drops
    PYTHONPATH, which would leave the child on whichever asyncsched is installed)."""
    port = free_port()
    env = clean_env(PYTHONPATH=str(Path(asyncsched.__file__).parents[1]))
    args = [
        sys.executable,
        "-m",
        "asyncsched",
        "run",
        "--tasks",
        "tasks.yaml",
        "--port",
        str(port),
        "--for",
        "300",
    ]
    process = Process(args, project, env)
    try:
        yield process, f"http://127.0.0.1:{port}/api/scheduler"
    finally:
        process.stop()


def click(selector: str) -> str:
    return f"document.querySelector({selector!r}).click()"


async def confirm_with(page: Page, answer: bool) -> None:
    """Replace ``window.confirm``: record each question and answer ``answer``."""
    await page.evaluate(
        f"window.questions = window.questions || []; "
        f"window.confirm = (q) => {{ window.questions.push(q); return {str(answer).lower()}; }}"
    )


async def test_dashboard_operator_actions(served: tuple[Process, str], tmp_path: Path) -> None:
    process, url = served
    process.expect("success ticker")
    shots = Path(os.environ.get("ASYNCSCHED_SCREENSHOTS") or tmp_path)
    api = httpx.Client(base_url=url, timeout=30)
    body = {"function": "apptasks:tick", "kwargs": {"bogus": 1}}  # a TypeError in the worker
    ids = [api.post("/jobs", json=body).json()["job_id"] for _ in range(3)]
    async with chromium_page() as page:
        started = time.monotonic()
        await page.goto(f"{url}/dashboard")
        await page.wait_for(f"{FAILED_ROWS}.length === 3", timeout=60)
        load_seconds = time.monotonic() - started

        # Every control has a name a screen reader can read.
        unnamed = await page.evaluate(
            "[...document.querySelectorAll('input,select,textarea')]"
            ".filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.outerHTML)"
            ".concat([...document.querySelectorAll('button')]"
            ".filter(b => !(b.textContent.trim() || b.getAttribute('aria-label'))).map(b => b.outerHTML))"
        )
        assert unnamed == []

        # A failed job's details: arguments, traceback, attempt.
        await page.evaluate(click(f'#failed tr[data-job-id="{ids[0]}"] button[data-job]'))
        await page.wait_for("document.getElementById('job-dialog').open")
        await page.wait_for("document.getElementById('job-traceback').textContent.includes('TypeError')")
        kwargs = await page.evaluate(
            "document.querySelector('#job-fields dd[data-field=\"kwargs\"]').textContent"
        )
        assert kwargs == '{"bogus":1}'
        assert await page.evaluate("document.getElementById('job-cancel').disabled") is True
        await page.screenshot(shots / "dashboard-job.png")

        # Requeue behind a confirmation: the job runs (and fails) again as attempt 2.
        await confirm_with(page, True)
        await page.evaluate(click("#job-requeue"))
        await page.wait_for("document.getElementById('job-message').textContent === 'requeued'")
        deadline = time.monotonic() + 60
        while api.get(f"/jobs/{ids[0]}").json()["attempt"] != 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert api.get(f"/jobs/{ids[0]}").json()["attempt"] == 2
        # The timeline lists both attempts from the history (each one failed).
        attempts = "document.querySelectorAll('#job-timeline li[data-attempt]').length"
        deadline = time.monotonic() + 60
        while await page.evaluate(f"openJob({ids[0]!r}).then(() => {attempts})") != 2:
            assert time.monotonic() < deadline, await page.evaluate(
                "document.getElementById('job-timeline').innerText"
            )
            await asyncio.sleep(0.3)
        await page.evaluate(click("#job-close"))

        # Bulk delete: refused when the operator says no, done when they say yes.
        await confirm_with(page, False)
        await page.evaluate(click("#failed-delete-all"))
        assert "cannot be undone" in (await page.evaluate("window.questions"))[-1]
        assert api.get("/queues/default/jobs", params={"status": "failed"}).json()["total"] >= 2
        await confirm_with(page, True)
        await page.wait_for(f"{FAILED_ROWS}.length === 3")  # the requeued job failed again
        await page.evaluate(click("#failed-delete-all"))
        await page.wait_for(f"{FAILED_ROWS}.length === 0")
        assert api.get("/queues/default/jobs", params={"status": "failed"}).json()["total"] == 0

        # Pause and resume the queue.
        await page.evaluate(click('#queues tr[data-queue="default"] button[data-action="pause"]'))
        await page.wait_for(
            "document.querySelector('#queues tr[data-queue=\"default\"]').dataset.paused === 'true'"
        )
        assert [q["paused"] for q in api.get("/queues").json()["items"] if q["name"] == "default"] == [True]
        await page.screenshot(shots / "dashboard.png")
        await page.evaluate(click('#queues tr[data-queue="default"] button[data-action="resume"]'))
        await page.wait_for(
            "document.querySelector('#queues tr[data-queue=\"default\"]').dataset.paused === 'false'"
        )

        # History: filtered by status on the server, paged 25 at a time.
        await page.evaluate(
            "document.querySelector('#history-filters select[name=status]').value = 'failed';"
            "document.querySelector('#history-filters button[type=submit]').click()"
        )
        await page.wait_for(
            "[...document.querySelectorAll('#executions tbody tr')].length > 0 && "
            "[...document.querySelectorAll('#executions tbody tr')].every(r => r.dataset.status === 'failed')"
        )
        await page.evaluate(
            "document.querySelector('#history-filters select[name=status]').value = 'success';"
            "document.querySelector('#history-filters button[type=submit]').click()"
        )
        await page.wait_for(
            "document.getElementById('history-range').textContent.startsWith('1\u201325 of ')", timeout=90
        )
        await page.evaluate(click("#history-next"))
        await page.wait_for("document.getElementById('history-range').textContent.startsWith('26\u2013')")
        assert await page.evaluate("document.querySelectorAll('#executions tbody tr').length") >= 1

        # Edit a task: the API's validation shows in the form; a valid change is saved.
        await page.evaluate(click('#tasks tr[data-name="ticker"] button[data-action="edit"]'))
        await page.wait_for("document.getElementById('task-dialog').open")
        await page.evaluate(
            "const f = document.getElementById('task-form'); f.elements.type.value = 'cron';"
            "f.elements.schedule.value = '61 * * * *'; f.requestSubmit()"
        )
        await page.wait_for("document.getElementById('task-error-schedule').textContent.length > 0")
        await page.evaluate(
            "const g = document.getElementById('task-form'); g.elements.type.value = 'interval';"
            "g.elements.schedule.value = '2 seconds'; g.requestSubmit()"
        )
        await page.wait_for("!document.getElementById('task-dialog').open")
        task = api.get("/tasks/ticker").json()
        assert (task["type"], task["schedule"]) == ("interval", "2 seconds")
    api.close()
    assert load_seconds < 30, load_seconds
