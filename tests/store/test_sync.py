"""The sync ``History`` facade over the repositories."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from asyncsched.store import Database, EventRepository, ExecutionNotFound, TaskExecution
from asyncsched.sync import History


def test_history_reads_for_sync_code(database_url: str) -> None:
    async def seed() -> None:
        async with Database(database_url, auto_migrate=True) as db:
            async with db.session() as s, s.begin():
                s.add(TaskExecution(job_id="j1", agent_name="mail", status="success"))
            await EventRepository(db).add("task.completed", "mail")

    asyncio.run(seed())
    with History(database_url) as history:
        history.migrate()
        page = history.executions(agent_name="mail")
        assert [e.job_id for e in page.items] == ["j1"]
        assert history.execution("j1").status == "success"
        with pytest.raises(ExecutionNotFound):
            history.execution("nope")
        assert history.events(event_type="task.*").total == 1
        assert history.prune(timedelta(days=1)).executions == 0
