"""Every long-lived background task runs under ``asyncsched._supervise.Supervised`` (issue 13, gap 3).

For each one a crash is injected (the loop body raises once): the component keeps working, the crash is
logged once, and nothing else restarts. These used to be bare ``asyncio.create_task`` calls: a crash of the
scheduler's change-feed or flush helper took its firing loop down, the firing loop of ``asyncsched
scheduler`` ended the process, ``asyncsched worker``'s loop likewise, and the web live feed went silent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from asyncsched._control import ControlPlane
from asyncsched._redis import reset_memory_servers
from asyncsched.config import Settings
from asyncsched.events import EventBus
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.scheduler import TaskScheduler
from asyncsched.store import Database
from asyncsched.store._recorder_watch import Watch as RecorderWatch
from asyncsched.web import _services
from asyncsched.web._live import LiveFeed
from asyncsched.worker import Worker
from asyncsched.worker._cli import supervised_run
from tests import jobs
from tests.waiting import eventually


@pytest.fixture
def memory_settings(tmp_path: Path) -> Iterator[Settings]:
    reset_memory_servers()
    yield Settings(
        redis_url=f"memory://sup-{uuid.uuid4().hex[:8]}",
        database_url=f"sqlite+aiosqlite:///{tmp_path}/t.db",
    )
    reset_memory_servers()


def crash_once(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> asyncio.Event:
    """Make ``owner.name`` (an async function) raise on its first call; the event is set on the next."""
    original = getattr(owner, name)
    calls = 0
    again = asyncio.Event()

    async def patched(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError(f"injected crash of {name}")
        again.set()
        return await original(*args, **kwargs)

    monkeypatch.setattr(owner, name, patched)
    return again


def crashes(caplog: pytest.LogCaptureFixture, task_name: str) -> int:
    return sum(f"{task_name} crashed (RuntimeError" in r.getMessage() for r in caplog.records)


async def test_scheduler_helpers_are_restarted_and_the_firing_loop_goes_on(
    memory_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    listen = crash_once(monkeypatch, TaskScheduler, "_listen")
    flush = crash_once(monkeypatch, TaskScheduler, "_flusher")
    caplog.set_level(logging.ERROR, logger="asyncsched.supervise")
    async with (
        Database(settings=memory_settings, auto_migrate=True) as db,
        TaskScheduler(settings=memory_settings, db=db, fire=True) as scheduler,
    ):
        await asyncio.wait_for(listen.wait(), 15)
        await asyncio.wait_for(flush.wait(), 15)
        await scheduler.register_task(
            name="t", agent_name="a", type="interval", schedule="1 hour", function="tests.jobs:add"
        )
        # the change notice reaches the restarted feed, and the firing loop reloads its tasks
        await eventually(
            lambda: any(task.name == "t" for task in scheduler._cache.views()),
            15,
            "the firing loop to see the new task",
        )
        runner = scheduler._runner
        assert runner is not None
        assert runner.running
        assert runner.restarts == 0  # the firing loop itself never went down
    assert crashes(caplog, "asyncsched-scheduler-listen") == 1
    assert crashes(caplog, "asyncsched-scheduler-flush") == 1


async def test_control_plane_scheduler_loop_is_restarted(
    memory_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The firing loop of ``asyncsched scheduler`` (and of a worker with ``--with-scheduler``)."""
    again = crash_once(monkeypatch, TaskScheduler, "run")
    caplog.set_level(logging.ERROR, logger="asyncsched.supervise")
    plane = ControlPlane(settings=memory_settings, scheduler=True, history=False, events=False)
    async with plane:
        waiting = asyncio.ensure_future(plane.wait())
        await asyncio.wait_for(again.wait(), 15)
        assert not waiting.done()  # the process would have exited here
        waiting.cancel()
    assert crashes(caplog, "asyncsched-control-scheduler") == 1


async def test_worker_command_loop_is_restarted(
    memory_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The main loop of ``asyncsched worker``."""
    again = crash_once(monkeypatch, Worker, "run")
    caplog.set_level(logging.ERROR, logger="asyncsched.supervise")
    async with TaskQueue(settings=memory_settings) as queue:
        job_id = await queue.enqueue(jobs.add, args=(1, 2))
        async with Worker(settings=memory_settings) as worker:
            running = asyncio.ensure_future(supervised_run(worker))
            await asyncio.wait_for(again.wait(), 15)

            async def done() -> bool:
                return await queue.status(job_id) == JobStatus.SUCCESS

            await eventually(done, 15, "the job to run after the crash")
            worker.request_stop()
            await asyncio.wait_for(running, 30)
    assert crashes(caplog, "asyncsched-worker") == 1


async def test_web_live_pump_is_restarted(
    memory_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    again = crash_once(monkeypatch, _services, "pump")
    caplog.set_level(logging.ERROR, logger="asyncsched.supervise")
    feed = LiveFeed()
    async with EventBus(settings=memory_settings, agent_name="*") as bus, AsyncExitStack() as stack:
        await _services.feed_from_bus(bus, feed, stack)
        await asyncio.wait_for(again.wait(), 15)

        async def delivered() -> bool:
            await bus.publish("probe.live", "src")
            return feed.received > 0

        await eventually(delivered, 15, "an event to reach the live feed after the crash")
    assert crashes(caplog, "asyncsched-web-live") == 1


async def test_recorder_watch_is_restarted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0
    again = asyncio.Event()

    async def loop(self: RecorderWatch) -> None:  # the duty loop: crashes once, then runs until stopped
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected crash of _loop")
        again.set()
        await self._stop.wait()

    async def check_redis(self: RecorderWatch, first: bool = False) -> None:
        return None

    monkeypatch.setattr(RecorderWatch, "_loop", loop)
    monkeypatch.setattr(RecorderWatch, "_check_redis", check_redis)
    caplog.set_level(logging.ERROR, logger="asyncsched.supervise")
    watch = RecorderWatch.__new__(RecorderWatch)  # its duties are not what this test is about
    watch._stop = asyncio.Event()
    watch._task = None
    await watch.start()
    await asyncio.wait_for(again.wait(), 15)
    assert watch._task is not None
    assert not watch._task.done()
    await watch.stop()
    assert calls == 2
    assert crashes(caplog, "asyncsched-recorder-watch") == 1


async def test_worker_arq_loop_is_restarted(
    memory_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop running arq producers' jobs next to RQ's (``Worker(arq=...)``)."""

    class FakeArq:
        processed = 0
        calls = 0
        again = asyncio.Event()

        async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("injected crash of the arq loop")
            self.again.set()
            await stop.wait()

    caplog.set_level(logging.ERROR, logger="asyncsched.supervise")
    fake = FakeArq()
    async with Worker(settings=memory_settings) as worker:
        worker._arq = fake  # type: ignore[assignment]
        running = asyncio.ensure_future(worker.run())
        await asyncio.wait_for(fake.again.wait(), 15)
        assert not running.done()
        worker.request_stop()
        await asyncio.wait_for(running, 30)
    assert fake.calls == 2
    assert crashes(caplog, "asyncsched-arq") == 1
