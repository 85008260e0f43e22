"""Repositories: paged, filtered reads of executions and events, and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from asyncsched.store import (
    Database,
    EventNotFound,
    EventRepository,
    ExecutionNotFound,
    ExecutionRepository,
    ScheduledTask,
    TaskExecution,
    prune,
)
from asyncsched.store import _repository as store_repository

NOW = datetime.now(UTC).replace(microsecond=0)


async def _seed(db: Database) -> ScheduledTask:
    task = ScheduledTask(
        id="t" * 32, agent_name="mail", name="digest", type="cron", schedule="0 9 * * *", function="m:f"
    )
    rows = [
        TaskExecution(
            job_id=f"job-{i:02d}",
            agent_name="mail" if i % 2 == 0 else "ops",
            status=["queued", "running", "success", "failed", "cancelled"][i % 5],
            queue="high" if i % 3 == 0 else "default",
            scheduled_task_id=task.id if i < 10 else None,
            task_name="digest" if i < 10 else None,
            created_at=NOW - timedelta(minutes=i),
        )
        for i in range(30)
    ]
    async with db.session() as s, s.begin():
        s.add(task)
        await s.flush()
        s.add_all(rows)
    return task


async def test_list_pages_newest_first(db: Database) -> None:
    await _seed(db)
    repo = ExecutionRepository(db)
    first = await repo.list(limit=10)
    assert (first.total, first.offset, first.limit, first.has_more) == (30, 0, 10, True)
    assert [r.job_id for r in first.items] == [f"job-{i:02d}" for i in range(10)]
    last = await repo.list(offset=25, limit=10)
    assert [r.job_id for r in last.items] == [f"job-{i:02d}" for i in range(25, 30)]
    assert last.has_more is False
    assert (await repo.list(limit=10_000)).limit == 1000
    with pytest.raises(ValueError, match="limit"):
        await repo.list(limit=0)


async def test_display_pages_count_their_total_up_to_a_cap(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page for display counts at most COUNT_LIMIT rows: beyond, the total is a lower bound
    (``total_capped``); a page at or past that many rows is not counted: its total is where it ends, capped
    while a row follows it (exact on the last page)."""
    monkeypatch.setattr(store_repository, "COUNT_LIMIT", 12)
    await _seed(db)
    repo = ExecutionRepository(db)
    first = await repo.list_for_display(limit=10)
    assert (first.total, first.total_capped, first.has_more) == (12, True, True)
    assert [r.job_id for r in first.items] == [f"job-{i:02d}" for i in range(10)]
    deep = await repo.list_for_display(offset=10, limit=10)  # not counted: 11 rows read, the 11th exists
    assert (deep.total, deep.total_capped, deep.has_more) == (20, True, True)
    last = await repo.list_for_display(offset=25, limit=10)  # 5 rows: the end, exact
    assert (last.total, last.total_capped, last.has_more) == (30, False, False)
    failed = await repo.list_for_display(limit=10, status="failed")  # 6 rows: under the cap
    assert (failed.total, failed.total_capped, failed.has_more) == (6, False, False)
    past = await repo.list_for_display(offset=40, limit=10)  # past the end: counted, to say where it is
    assert (past.items, past.total, past.total_capped, past.has_more) == ([], 30, False, False)
    exact = await repo.list(limit=10)  # the library's list counts every row
    assert (exact.total, exact.total_capped) == (30, False)


async def test_list_filters(db: Database) -> None:
    task = await _seed(db)
    repo = ExecutionRepository(db)
    assert (await repo.list(agent_name="mail")).total == 15
    assert (await repo.list(status="success")).total == 6
    assert (await repo.list(status=["success", "failed"])).total == 12
    assert (await repo.list(task_id=task.id)).total == 10
    assert (await repo.list(queue="high")).total == 10
    assert (await repo.list(task_name="digest")).total == 10
    window = await repo.list(since=NOW - timedelta(minutes=5), until=NOW - timedelta(minutes=1))
    assert [r.job_id for r in window.items] == ["job-02", "job-03", "job-04", "job-05"]  # [since, until)
    naive = await repo.list(since=(NOW - timedelta(minutes=2)).replace(tzinfo=None))
    assert naive.total == 3  # naive datetimes are UTC
    both = await repo.list(agent_name="mail", status="queued", task_id=task.id)
    assert [r.job_id for r in both.items] == ["job-00"]
    with pytest.raises(ValueError, match="unknown execution status"):
        await repo.list(status="done")
    assert await repo.counts(agent_name="mail") == {
        "queued": 3,
        "running": 3,
        "success": 3,
        "failed": 3,
        "cancelled": 3,
    }


async def test_get_by_id_or_job_id(db: Database) -> None:
    await _seed(db)
    async with db.session() as s, s.begin():
        s.add(TaskExecution(job_id="job-00", attempt=2, status="success", created_at=NOW))
    repo = ExecutionRepository(db)
    latest = await repo.get("job-00")
    assert latest.attempt == 2
    assert (await repo.get(latest.id)).id == latest.id
    assert latest.created_at.tzinfo is not None  # aware UTC on every backend
    with pytest.raises(ExecutionNotFound):
        await repo.get("nope")
    with pytest.raises(LookupError):
        await repo.get("nope")


async def test_events_add_list_and_filters(db: Database) -> None:
    repo = EventRepository(db)
    await repo.add("task.completed", "mail", {"n": 1}, created_at=NOW - timedelta(minutes=3))
    await repo.add("task.failed", "ops", target_agent="mail", created_at=NOW - timedelta(minutes=2))
    await repo.add("email.processed", "mail", created_at=NOW - timedelta(minutes=1))
    await repo.add("task_x.odd", "bot", created_at=NOW)
    kept = await repo.add("system.startup", "bot", id="fixed-id", created_at=NOW)
    again = await repo.add("system.other", "bot", id="fixed-id")
    assert again.id == kept.id
    assert again.event_type == "system.startup"
    assert (await repo.list()).total == 5
    tasks = await repo.list(event_type="task.*")
    assert [e.event_type for e in tasks.items] == ["task.failed", "task.completed"]
    assert (await repo.list(event_type="task.failed")).total == 1
    assert (await repo.list(event_type="*")).total == 5
    assert (await repo.list(event_type="task_*")).total == 1  # "_" is literal, not a LIKE wildcard
    assert {e.event_type for e in (await repo.list(agent="mail")).items} == {
        "task.completed",
        "task.failed",
        "email.processed",
    }
    assert (await repo.list(since=NOW - timedelta(minutes=1))).total == 3
    page = await repo.list(limit=2, offset=2)
    assert (len(page.items), page.total) == (2, 5)
    assert (await repo.get("fixed-id")).payload == {}
    with pytest.raises(EventNotFound):
        await repo.get("missing")


async def test_prune_by_age(db: Database) -> None:
    await _seed(db)
    events = EventRepository(db)
    await events.add("old", "a", created_at=NOW - timedelta(days=40))
    await events.add("new", "a", created_at=NOW)
    async with db.session() as s, s.begin():
        s.add(TaskExecution(job_id="ancient", created_at=NOW - timedelta(days=31)))
    result = await prune(db, timedelta(days=30))
    assert (result.executions, result.events) == (1, 1)
    assert (await ExecutionRepository(db).list()).total == 30
    assert [e.event_type for e in (await events.list()).items] == ["new"]
    assert await ExecutionRepository(db).prune(NOW - timedelta(minutes=9, seconds=30)) == 20
