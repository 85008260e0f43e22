"""The dashboard in a real headless Chromium against ``asyncsched run``: a task fires, the page shows it,
and the page updates when the task fires again; its buttons work."""

from __future__ import annotations

from pathlib import Path

import httpx

from .cdp import chromium_page
from .procs import Process

SUCCESS_ROWS = "[...document.querySelectorAll('#executions tbody tr[data-status=\"success\"]')]"


async def test_dashboard_shows_fired_tasks_and_updates(
    run_process: tuple[Process, str], tmp_path: Path
) -> None:
    process, url = run_process
    process.expect("success ticker")
    async with chromium_page() as page:
        await page.goto(f"{url}/dashboard")
        assert await page.evaluate("document.title") == "asyncsched"

        # The scheduled task, with its next run, and an execution of it that succeeded.
        await page.wait_for("document.querySelector('#tasks tbody tr[data-name=\"ticker\"]')")
        next_run = await page.evaluate(
            "document.querySelector('#tasks tr[data-name=\"ticker\"]').cells[5].innerText"
        )
        assert "in " in next_run or "ago" in next_run or "now" in next_run
        first_jobs = await page.wait_for(
            f"{SUCCESS_ROWS}.filter(r => r.dataset.task === 'ticker').map(r => r.dataset.jobId)"
        )
        assert first_jobs
        duration = await page.evaluate(f"{SUCCESS_ROWS}[0].cells[4].innerText")
        assert duration.endswith(" s")

        # It fires again: the page shows a new successful run without being reloaded.
        known = "[" + ",".join(f"'{j}'" for j in first_jobs) + "]"
        await page.wait_for(f"{SUCCESS_ROWS}.some(r => !{known}.includes(r.dataset.jobId))")

        # Queues with counts, the worker, and live events from the stream.
        await page.wait_for("document.querySelector('#queues tr[data-queue=\"default\"]')")
        await page.wait_for("document.querySelectorAll('#workers tbody tr').length === 1")
        await page.wait_for("document.querySelector('#events li[data-type=\"task.completed\"]')")
        assert await page.evaluate("document.getElementById('live-state').innerText") == "live"
        assert await page.evaluate("document.getElementById('health').innerText") == "healthy"
        await page.screenshot(tmp_path / "dashboard.png")

        # Buttons: disable, then run now.
        await page.evaluate(
            'document.querySelector(\'#tasks tr[data-name="ticker"] button[data-action="disable"]\').click()'
        )
        await page.wait_for(
            "document.querySelector('#tasks tr[data-name=\"ticker\"]').dataset.enabled === 'false'"
        )
        with httpx.Client(base_url=url) as client:
            assert client.get("/tasks/ticker").json()["enabled"] is False
        seen = await page.evaluate(f"{SUCCESS_ROWS}.map(r => r.dataset.jobId)")
        await page.evaluate(
            'document.querySelector(\'#tasks tr[data-name="ticker"] button[data-action="run now"]\').click()'
        )
        seen_js = "[" + ",".join(f"'{j}'" for j in seen) + "]"
        fresh = f"r => !{seen_js}.includes(r.dataset.jobId) && r.dataset.jobId.includes('-run-')"
        await page.wait_for(f"{SUCCESS_ROWS}.some({fresh})")
        await page.evaluate(
            'document.querySelector(\'#tasks tr[data-name="ticker"] button[data-action="enable"]\').click()'
        )
        await page.wait_for(
            "document.querySelector('#tasks tr[data-name=\"ticker\"]').dataset.enabled === 'true'"
        )
