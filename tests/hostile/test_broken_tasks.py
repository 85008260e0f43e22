"""Stored task rows that cannot be fully read or no longer validate (issue 13, gap 1).

A row edited by hand, stored before a rule existed, or whose function the allow-list now refuses must never
answer 500 or a traceback: an operator can always delete and disable it (API, CLI, Python), it is listed as
broken with the reason, and enable/run refuse with a 409 naming the field. SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from asyncsched.config import Settings
from asyncsched.exceptions import BrokenTask
from asyncsched.scheduler import TaskScheduler
from asyncsched.store import Database, ScheduledTask
from asyncsched.web._security import API_SOURCE

from ..ops.conftest import Cli
from .test_http import _add, _set_json, _task, api, db, hostile_settings, services  # noqa: F401

DEEP = "[" * 5000 + "]" * 5000

# (column, how the row is broken, the field a refusal names)
SHAPES: list[tuple[str, str, str]] = [
    ("kwargs", '{"to": "\\ud800"}', "kwargs"),  # a lone surrogate: JSON that does not decode to text
    ("kwargs", DEEP, "kwargs"),  # deeper than any decoder goes
    ("kwargs", "[1, 2]", "kwargs"),  # decodes, but not an object
    ("options", '{"start": "yesterday"}', "options.start"),  # the trigger no longer builds
    ("schedule", "every blue moon", "schedule"),  # the trigger no longer parses
    ("function", "os:system", "function"),  # refused by the API's allow-list now
]
IDS = ["surrogate", "deep", "kwargs-list", "bad-start", "bad-schedule", "not-allowed"]


async def _break(database: Database, row_id: str, column: str, value: str) -> None:
    if column in ("kwargs", "options", "args"):
        await _set_json(database, "asyncsched_scheduled_tasks", column, row_id, value)
        return
    async with database.engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE asyncsched_scheduled_tasks SET {column} = :v WHERE id = :id"),
            {"v": value, "id": row_id},
        )


async def _broken(database: Database, column: str, value: str) -> ScheduledTask:
    good, bad = _task("good"), _task("bad")
    bad.enabled, bad.source = True, API_SOURCE  # created through the API: the allow-list applies
    await _add(database, good, bad)
    await _break(database, bad.id, column, value)
    return bad


async def _enabled(database: Database, row_id: str) -> bool | None:
    async with database.session() as session:
        found = await session.scalar(select(ScheduledTask.enabled).where(ScheduledTask.id == row_id))
        return None if found is None else bool(found)


def _names(response: httpx.Response, field: str) -> None:
    detail = response.json()["detail"]
    assert f"field {field!r}" in detail, detail


@pytest.mark.parametrize(("column", "value", "field"), SHAPES, ids=IDS)
async def test_api_deletes_disables_and_refuses_a_broken_task(
    api: httpx.AsyncClient,  # noqa: F811
    db: Database,  # noqa: F811
    column: str,
    value: str,
    field: str,
) -> None:
    bad = await _broken(db, column, value)
    listed = {item["id"]: item for item in (await api.get("/tasks")).json()["items"]}
    assert bad.id in listed
    for action in ("enable", "run"):
        response = await api.post(f"/tasks/{bad.id}/{action}")
        assert response.status_code == 409, (action, response.text)
        _names(response, field)
    disabled = await api.post(f"/tasks/{bad.id}/disable")
    assert disabled.status_code == 200, disabled.text
    assert await _enabled(db, bad.id) is False
    assert (await api.post(f"/tasks/{bad.id}/disable")).status_code == 200  # twice: nothing to do
    enable = await api.post(f"/tasks/{bad.id}/enable")
    assert enable.status_code == 409
    assert await _enabled(db, bad.id) is False
    # by name too
    assert (await api.delete("/tasks/bad")).status_code == 204, "delete by name"
    assert await _enabled(db, bad.id) is None
    assert (await api.get("/tasks")).json()["total"] == 1


@pytest.mark.parametrize(("column", "value", "field"), SHAPES[:5], ids=IDS[:5])
async def test_python_scheduler_deletes_disables_and_refuses_a_broken_task(
    hostile_settings: Settings,  # noqa: F811
    db: Database,  # noqa: F811
    column: str,
    value: str,
    field: str,
) -> None:
    bad = await _broken(db, column, value)
    async with TaskScheduler(settings=hostile_settings, db=db) as scheduler:
        with pytest.raises(BrokenTask) as refused:
            await scheduler.enable(bad.id)
        assert field in [p.field for p in refused.value.problems]
        with pytest.raises(BrokenTask, match=field):
            await scheduler.run_now("bad")
        disabled = await scheduler.disable("bad")
        assert (disabled.id, disabled.enabled) == (bad.id, False)
        assert await _enabled(db, bad.id) is False
        # the scheduler keeps firing the other tasks (a bad row does not break reloading)
        await scheduler.rebuild_index()
        assert await scheduler.index.indexed_ids() == {t.id for t in await _readable(db)}
        deleted = await scheduler.unregister_task(bad.id)
        assert deleted.id == bad.id
        assert await _enabled(db, bad.id) is None


async def _readable(database: Database) -> list[ScheduledTask]:
    async with database.session() as session:
        rows = await session.scalars(select(ScheduledTask).where(ScheduledTask.name == "good"))
        return list(rows)


@pytest.mark.parametrize(("column", "value", "field"), SHAPES[:5:2], ids=IDS[:5:2])
async def test_cli_deletes_disables_and_refuses_a_broken_task(
    hostile_settings: Settings,  # noqa: F811
    db: Database,  # noqa: F811
    column: str,
    value: str,
    field: str,
    real_redis_url: str,
) -> None:
    bad = await _broken(db, column, value)
    cli = Cli(Settings(redis_url=real_redis_url, database_url=hostile_settings.database_url))
    for action in ("enable", "run"):
        out = await cli("tasks", action, bad.id)
        assert out.returncode == 1, (action, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        assert f"field {field!r}" in out.stderr, out.stderr
    disabled: dict[str, Any] = await cli.json("tasks", "disable", "bad")
    assert disabled["id"] == bad.id
    assert await _enabled(db, bad.id) is False
    out = await cli("tasks", "delete", "bad")
    assert out.returncode == 0, out.stderr
    assert bad.id in out.stdout
    assert await _enabled(db, bad.id) is None
    assert (await cli("tasks", "delete", "bad")).returncode == 4
