"""Bulk registration (``TaskScheduler.add_tasks``): the same rows and index as single adds, all or nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from asyncsched import TaskDefinitionError
from asyncsched.exceptions import DuplicateTask
from asyncsched.scheduler import TaskScheduler, _bulk, build_task, job_id_for
from asyncsched.store import ScheduledTask

from .conftest import FUNCTION, Clock, RecordingQueue
from .test_yaml import SPEC_EXAMPLE


def at(h: int, m: int = 0, s: int = 0) -> datetime:
    return datetime(2026, 6, 1, h, m, s, tzinfo=UTC)


def task(name: str, **fields: Any) -> ScheduledTask:
    spec: dict[str, Any] = {"type": "interval", "schedule": "1 minute", "function": FUNCTION, **fields}
    return build_task(agent_name="test-agent", name=name, **spec)


_COMPARED = ("enabled", "type", "schedule", "timezone", "function", "args", "kwargs", "queue", "options")


async def _state(scheduler: TaskScheduler, name: str) -> tuple[Any, ...]:
    stored = await scheduler.get_task(name, "test-agent")
    sig = await scheduler.index.redis.hget(scheduler.index.sig_key, stored.id)
    return (
        *(getattr(stored, c) for c in _COMPARED),
        stored.next_run_at,
        stored.anchor_at,
        stored.description,
        await scheduler.index.score(stored.id),
        sig,
    )


async def test_bulk_rows_and_index_match_single_adds(scheduler: TaskScheduler) -> None:
    variants: list[dict[str, Any]] = [
        {},
        {"type": "cron", "schedule": "0 9 * * *", "timezone": "Europe/Paris", "kwargs": {"x": 1}},
        {"schedule": "90 seconds", "align": "epoch", "queue": "q2", "args": [1, "a"]},
        {"type": "date", "schedule": "2026-06-02T00:00:00Z", "description": "d"},
        {"enabled": False},
        {"start": "2026-01-01T00:00:07Z", "misfire": "skip"},
    ]
    for i, fields in enumerate(variants):
        await scheduler.register_task(task(f"single{i}", **fields))
    ids = await scheduler.add_tasks([task(f"bulk{i}", **fields) for i, fields in enumerate(variants)])
    assert [(await scheduler.get_task(i)).name for i in ids] == [f"bulk{i}" for i in range(len(variants))]
    for i in range(len(variants)):
        single, bulk = await _state(scheduler, f"single{i}"), await _state(scheduler, f"bulk{i}")
        assert bulk == single, (i, variants[i])
    assert (await scheduler.get_task("bulk4", "test-agent")).next_run_at is None
    assert await scheduler.index.score(ids[4]) is None  # disabled: not indexed


async def test_tasks_sharing_a_schedule_each_get_their_own_plan_and_values(scheduler: TaskScheduler) -> None:
    """The first tick and signature are planned once per distinct schedule: tasks that share the schedule
    text but differ in what the plan depends on (enabled, align, start, zone) still get their own; and the
    values (non-ASCII text, nested JSON) read back as given (PostgreSQL: the binary COPY)."""
    variants: list[dict[str, Any]] = [
        {"args": ["é", {"a": [1, 2.5, None, True]}], "kwargs": {"k": "ü\u2028", "n": {"x": []}}},
        {"enabled": False},
        {"align": "epoch"},
        {"start": "2026-01-01T00:00:07Z"},
        {"start": "2026-01-01T00:00:09Z"},
        {"type": "cron", "schedule": "0 9 * * *"},
        {"type": "cron", "schedule": "0 9 * * *", "timezone": "Asia/Tokyo"},
        {},
    ]
    for i, fields in enumerate(variants):
        await scheduler.register_task(task(f"single{i}", **fields))
    await scheduler.add_tasks([task(f"bulk{i}", **fields) for i, fields in enumerate(variants)])
    for i, fields in enumerate(variants):
        assert await _state(scheduler, f"bulk{i}") == await _state(scheduler, f"single{i}"), fields
    stored = await scheduler.get_task("bulk0", "test-agent")
    assert (stored.args, stored.kwargs) == (variants[0]["args"], variants[0]["kwargs"])


async def test_a_bulk_added_task_fires_like_a_single_added_one(
    scheduler: TaskScheduler, queue: RecordingQueue, clock: Clock
) -> None:
    single = await scheduler.register_task(task("single"))
    (bulk_id,) = await scheduler.add_tasks([task("bulk")])
    bulk = await scheduler.get_task(bulk_id)
    assert await scheduler.run_pending() == []
    clock.now = at(12, 1)
    fired = await scheduler.run_pending()
    assert sorted(f.job_id for f in fired) == sorted(
        [job_id_for(single.id, at(12, 1)), job_id_for(bulk.id, at(12, 1))]
    )
    assert await scheduler.run_pending() == []  # each tick once
    call = next(c for c in queue.calls if c["scheduled_task_id"] == bulk.id)
    assert (call["task_name"], call["unique"]) == ("bulk", True)


async def _nothing_stored(scheduler: TaskScheduler, before: int) -> None:
    assert len(await scheduler.list_tasks()) == before
    assert await scheduler.index.redis.zcard(scheduler.index.next_key) == before
    assert await scheduler.index.redis.hlen(scheduler.index.sig_key) == before


async def test_a_name_given_twice_stores_nothing(scheduler: TaskScheduler) -> None:
    with pytest.raises(DuplicateTask, match=r"tasks 0 and 2 are both named 'a'"):
        await scheduler.add_tasks([task("a"), task("b"), task("a")])
    await _nothing_stored(scheduler, 0)


async def test_a_stored_name_in_a_later_chunk_rolls_back_every_chunk(
    scheduler: TaskScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    await scheduler.register_task(task("taken"))
    monkeypatch.setattr(_bulk, "CHUNK", 2)  # five INSERT statements; the clash is in the last chunk
    batch = [task(f"n{i}") for i in range(8)] + [task("taken")]
    with pytest.raises(DuplicateTask, match="'taken' already exists for agent 'test-agent'"):
        await scheduler.add_tasks(batch)
    await _nothing_stored(scheduler, 1)
    assert len(await scheduler.add_tasks(batch[:8])) == 8  # in chunks of two, every row and index entry
    await _nothing_stored(scheduler, 9)


async def test_a_bad_schedule_names_its_position_and_stores_nothing(scheduler: TaskScheduler) -> None:
    bad = task("bad")
    bad.schedule = "every so often"  # edited after validation, as a row built in code might be
    with pytest.raises(TaskDefinitionError) as info:
        await scheduler.add_tasks([task("ok"), bad])
    assert info.value.problems[0].task == "#1 bad"
    assert info.value.problems[0].field == "schedule"
    await _nothing_stored(scheduler, 0)


async def test_first_file_load_takes_the_bulk_path_and_a_reload_updates(
    scheduler: TaskScheduler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(SPEC_EXAMPLE)
    calls: list[int] = []
    original = scheduler._add_new

    async def spy(tasks: Any) -> list[dict[str, Any]]:
        calls.append(len(tasks))
        return await original(tasks)

    monkeypatch.setattr(scheduler, "_add_new", spy)
    first = await scheduler.register_file(path, "email-agent")
    assert calls == [2]
    assert all(t.source == str(path) for t in first)
    second = await scheduler.register_file(path, "email-agent")  # the row path: updates, never duplicates
    assert calls == [2]
    assert [t.id for t in second] == [t.id for t in first]
    assert len(await scheduler.index.indexed_ids()) == 2


async def test_a_rebuild_indexes_every_task_and_drops_what_sql_no_longer_holds(
    scheduler: TaskScheduler,
) -> None:
    """More tasks than one write chunk (1,000) and than one scan page of the index: every task indexed, and
    the entries of tasks gone from SQL (deleted while no replica ran) dropped, from the schedule and from
    the signatures alike."""
    ids = await scheduler.add_tasks([task(f"t{k}") for k in range(2_500)])
    index = scheduler.index
    for k in range(700):
        await index.sync(f"ghost-{k}", "old-signature", 1_000 + k)
    await index.redis.hset(index.sig_key, "ghost-sig-only", "x")
    for k in range(0, 2_500, 3):  # index entries lost: written again
        await index.sync(ids[k], "", None)
    assert len(await index.indexed_ids()) == 2_500 - 834 + 701
    await scheduler.rebuild_index()
    assert await index.indexed_ids() == set(ids)
    assert await index.redis.zcard(index.next_key) == 2_500
    assert await index.redis.hlen(index.sig_key) == 2_500
    assert await index.unknown_ids(set(ids)) == set()
    assert await index.unknown_ids(set(ids[1:])) == {ids[0]}
