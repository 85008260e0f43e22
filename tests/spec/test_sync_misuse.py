"""Sync code calling the async top-level classes (the spec's calls without ``await``) fails loudly and
names ``asyncsched.sync``; ``asyncio.run(...)`` of the same calls keeps working."""

from __future__ import annotations

import asyncio
import gc
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

import asyncsched
from asyncsched._redis import reset_memory_servers
from asyncsched.config import Settings, set_settings

FUNCTION = "tests.scheduler.conftest:jobs_fn"


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    reset_memory_servers()
    value = Settings(redis_url="memory://misuse", database_url=f"sqlite+aiosqlite:///{tmp_path}/m.db")
    set_settings(value)
    yield value
    set_settings(None)
    reset_memory_servers()


def test_a_discarded_call_raises_naming_the_sync_facade(settings: Settings) -> None:
    queue = asyncsched.TaskQueue()
    with pytest.raises(TypeError, match=r"TaskQueue.enqueue\(\) is async .* asyncsched.sync.TaskQueue"):
        queue.enqueue(FUNCTION, agent_name="a", task_name="t")
    bus = asyncsched.EventBus()
    with pytest.raises(TypeError, match=r"asyncsched.sync.EventBus"):
        bus.publish(event_type="email.batch_processed", source_agent="email-agent", payload={})
    scheduler = asyncsched.TaskScheduler()
    with pytest.raises(TypeError, match=r"TaskScheduler.register_task\(\) .* asyncsched.sync.TaskScheduler"):
        scheduler.register_task(name="t", type="interval", schedule="1 hour", function=FUNCTION)


def test_using_the_result_raises_and_dropping_it_logs(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(f"tasks:\n  - {{name: t, type: interval, schedule: '1 hour', function: '{FUNCTION}'}}\n")
    scheduler = asyncsched.TaskScheduler()
    tasks = scheduler.load_tasks_from_yaml(str(path), agent_name="your-agent")
    with pytest.raises(TypeError, match=r"asyncsched\.sync\.TaskScheduler"):
        for _task in tasks:
            pass
    del tasks
    queue = asyncsched.TaskQueue()
    job_id = queue.enqueue(FUNCTION)
    with pytest.raises(AttributeError, match=r"asyncsched\.sync\.TaskQueue"):
        job_id.upper()  # type: ignore[attr-defined]
    del job_id
    gc.collect()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("TaskScheduler.load_tasks_from_yaml() is async" in e for e in errors), errors
    assert any("TaskQueue.enqueue() is async" in e for e in errors), errors


def test_asyncio_run_of_a_call_made_outside_the_loop_works(settings: Settings) -> None:
    queue = asyncsched.TaskQueue()

    async def status(job_id: str) -> object:
        async with queue:
            return await queue.status(job_id)

    job_id = asyncio.run(queue.enqueue(FUNCTION))
    assert isinstance(job_id, str)
    assert str(asyncio.run(status(job_id))).endswith("queued")


async def test_inside_a_loop_the_methods_return_plain_coroutines(settings: Settings) -> None:
    async with asyncsched.TaskQueue() as queue:
        pending = queue.enqueue(FUNCTION)
        assert inspect.iscoroutine(pending)
        assert isinstance(await pending, str)
