"""The dashboard's task forms in a real headless Chromium against ``asyncsched run`` served under a path
prefix: create, edit and delete a task, driven from the keyboard where an operator would; the API's
validation errors (422, and 409 on a name clash) shown next to the field they name.

With ``ASYNCSCHED_SCREENSHOTS=DIR`` the test also writes the form's screenshot used by docs/operations.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from .cdp import Page, chromium_page
from .procs import Process
from .test_dashboard_ops import click, confirm_with, served  # noqa: F401 (served: the fixture)

KEYS = {"Enter": 13, "Tab": 9, "Escape": 27}


async def press(page: Page, key: str) -> None:
    """A real key press (keyDown + keyUp) sent to the focused element."""
    text = {"Enter": "\r"}.get(key, "")
    code = KEYS[key]
    await page.send("Input.dispatchKeyEvent", type="keyDown", key=key, code=key, text=text,
                    windowsVirtualKeyCode=code, nativeVirtualKeyCode=code)  # fmt: skip
    await page.send("Input.dispatchKeyEvent", type="keyUp", key=key, code=key,
                    windowsVirtualKeyCode=code, nativeVirtualKeyCode=code)  # fmt: skip


async def fill(page: Page, **values: str) -> None:
    """Set fields of the task form (by name)."""
    for name, value in values.items():
        await page.evaluate(f"document.getElementById('task-form').elements[{name!r}].value = {value!r}")


def field_error(name: str) -> str:
    return f"document.getElementById('task-error-{name}').textContent"


async def active_id(page: Page) -> str:
    return str(await page.evaluate("document.activeElement.id"))


async def test_create_edit_and_delete_a_task(served: tuple[Process, str], tmp_path: Path) -> None:  # noqa: F811
    process, url = served
    process.expect("success ticker")
    shots = Path(os.environ.get("ASYNCSCHED_SCREENSHOTS") or tmp_path)
    api = httpx.Client(base_url=url, timeout=30)
    async with chromium_page() as page:
        await page.goto(f"{url}/dashboard")
        await page.wait_for("document.querySelector('#tasks tr[data-name=\"ticker\"]')")

        # Every control of the form has a label; the form opens from the keyboard, focus on its first field.
        unlabeled = await page.evaluate(
            "[...document.querySelectorAll('#task-form input, #task-form select, #task-form textarea')]"
            ".filter(e => !e.labels.length).map(e => e.name)"
        )
        assert unlabeled == []
        await page.evaluate("document.getElementById('task-new').focus()")
        await press(page, "Enter")
        await page.wait_for("document.getElementById('task-dialog').open")
        assert await active_id(page) == "task-name"
        await page.send("Input.insertText", text="nightly")
        assert await page.evaluate("document.getElementById('task-title').textContent") == "New task"

        # Invalid JSON is caught before anything is sent: next to its field, which gets the focus.
        await fill(page, type="cron", schedule="61 * * * *", function="apptasks:tick", kwargs="{bad")
        await press(page, "Tab")  # from the name field, still inside the dialog
        await press(page, "Enter")  # submits the form
        await page.wait_for(f"{field_error('kwargs')}.includes('invalid JSON')")
        assert await active_id(page) == "task-kwargs"
        assert api.get("/tasks/nightly").status_code == 404

        # The server's 422: the schedule's error next to the schedule field (aria-invalid, described by it).
        await fill(page, kwargs='{"n": 2}')
        await page.evaluate("document.getElementById('task-form').requestSubmit()")
        await page.wait_for(f"{field_error('schedule')}.length > 0")
        assert await page.evaluate(f"{field_error('kwargs')}") == ""
        assert (
            await page.evaluate("document.getElementById('task-schedule').getAttribute('aria-invalid')")
            == "true"
        )
        described = "document.getElementById('task-schedule').getAttribute('aria-describedby')"
        assert await page.evaluate(described) == "task-error-schedule"
        assert await active_id(page) == "task-schedule"
        await page.screenshot(shots / "dashboard-task-form.png")

        # A name clash (409) shows next to the name.
        await fill(page, name="ticker", schedule="0 3 * * *")
        await page.evaluate("document.getElementById('task-form').requestSubmit()")
        await page.wait_for(f"{field_error('name')}.length > 0")
        assert await page.evaluate(f"{field_error('schedule')}") == ""

        # Valid: created, the dialog closes, the row appears.
        await fill(page, name="nightly")
        await page.evaluate("document.getElementById('task-form').requestSubmit()")
        await page.wait_for("!document.getElementById('task-dialog').open")
        await page.wait_for("document.querySelector('#tasks tr[data-name=\"nightly\"]')")
        task = api.get("/tasks/nightly").json()
        assert (task["type"], task["schedule"], task["kwargs"], task["enabled"]) == (
            "cron", "0 3 * * *", {"n": 2}, True,
        )  # fmt: skip

        # Edit: the same validation; only the agent is fixed (hidden); a valid change is saved.
        await page.evaluate(click('#tasks tr[data-name="nightly"] button[data-action="edit"]'))
        await page.wait_for("document.getElementById('task-dialog').open")
        hidden = "document.querySelector('#task-form .field[data-field=\"agent_name\"]').hidden"
        assert await page.evaluate(hidden) is True
        await fill(page, schedule="0 25 * * *")
        await page.evaluate("document.getElementById('task-form').requestSubmit()")
        await page.wait_for(f"{field_error('schedule')}.length > 0")
        await fill(page, schedule="30 4 * * *")
        await page.evaluate("document.getElementById('task-form').elements.enabled.checked = false")
        overlap = "document.getElementById('task-form').elements.overlap"
        assert await page.evaluate(f"{overlap}.value") == "skip"  # the default, shown as such
        await page.evaluate(f"{overlap}.value = 'queue'")
        await page.evaluate("document.getElementById('task-form').requestSubmit()")
        await page.wait_for("!document.getElementById('task-dialog').open")
        task = api.get("/tasks/nightly").json()
        assert (task["schedule"], task["enabled"], task["kwargs"]) == ("30 4 * * *", False, {"n": 2})
        assert task["options"]["overlap"] == "queue"

        # Escape closes the form without saving.
        await page.evaluate(click('#tasks tr[data-name="nightly"] button[data-action="edit"]'))
        await page.wait_for("document.getElementById('task-dialog').open")
        await fill(page, schedule="0 5 * * *")
        await press(page, "Escape")
        await page.wait_for("!document.getElementById('task-dialog').open")
        assert api.get("/tasks/nightly").json()["schedule"] == "30 4 * * *"

        # Delete, behind a confirmation: "no" keeps the task, "yes" deletes it.
        await confirm_with(page, False)
        await page.evaluate(click('#tasks tr[data-name="nightly"] button[data-action="delete"]'))
        assert "nightly" in (await page.evaluate("window.questions"))[-1]
        assert api.get("/tasks/nightly").status_code == 200
        await confirm_with(page, True)
        await page.evaluate(click('#tasks tr[data-name="nightly"] button[data-action="delete"]'))
        await page.wait_for("!document.querySelector('#tasks tr[data-name=\"nightly\"]')")
        assert api.get("/tasks/nightly").status_code == 404
    api.close()
