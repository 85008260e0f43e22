"""``asyncsched info`` shows the limits in use with their usage (text and ``--json``)."""

from __future__ import annotations

import asyncio

from asyncsched.config import Settings
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.worker import Worker
from tests import jobs
from tests.waiting import eventually

from .conftest import Cli


async def test_info_lists_limits(cli: Cli, queue: TaskQueue, ops_settings: Settings) -> None:
    capped = [
        await queue.enqueue(jobs.async_sleep, args=(60,), max_concurrency=1, concurrency_key="cap")
        for _ in range(2)
    ]
    async with Worker(settings=ops_settings, concurrency=4) as worker:
        task = asyncio.create_task(worker.run())

        async def one_runs_one_waits() -> bool:
            states = [await queue.status(j) for j in capped]
            return sorted(states) == [JobStatus.DEFERRED, JobStatus.RUNNING]

        await eventually(one_runs_one_waits, what="one capped job running, the other parked")
        data = await cli.json("info")
        text = await cli("info")
        worker.request_stop()
        for job_id in capped:
            await queue.cancel(job_id)
        await task
    assert data["limits"] == [
        {"key": "cap", "kind": "asyncsched", "max_concurrency": 1, "rate": None, "period": None,
         "running": 1, "started": 0, "waiting": 1},
    ]  # fmt: skip
    line = next(row for row in text.stdout.splitlines() if row.startswith("cap "))
    assert line.split() == ["cap", "asyncsched", "1", "-", "1", "-", "1"]
