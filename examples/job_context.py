"""Job context, progress, cooperative cancel, worker hooks and retries with backoff (docs/job-context.md).

Run it: ``python examples/job_context.py`` (embedded Redis, nothing to install) or with ``REDIS_URL`` set.
A worker in another process takes the hooks with ``asyncsched worker --hooks job_context:AppHooks`` (run
from this directory).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncsched
from asyncsched.config import Settings
from asyncsched.events import EventBus
from asyncsched.queue import Retry, TaskQueue
from asyncsched.worker import Worker


class AppHooks:
    """Worker hooks: a shared resource made once per worker, a line around every job."""

    async def on_startup(self, ctx: dict[str, Any]) -> None:
        ctx["db"] = {"connected": True}  # e.g. await asyncpg.create_pool(...)

    async def on_shutdown(self, ctx: dict[str, Any]) -> None:
        ctx["db"]["connected"] = False  # e.g. await ctx["db"].close()

    def before_job(self, job: asyncsched.CurrentJob) -> None:
        print(f"before {job.id[:8]} attempt {job.attempt}")

    async def after_job(self, job: asyncsched.CurrentJob) -> None:
        print(f"after  {job.id[:8]}: {job.outcome}")


def import_rows(total: int) -> int:
    """A sync job (runs in a worker thread): reports progress, stops early when cancelled."""
    job = asyncsched.current_job()
    assert job is not None
    assert job.resources["db"]["connected"]
    done = 0
    for done in range(1, total + 1):
        if job.cancelled:  # set by cancel (API, CLI, TaskQueue.cancel), timeout and shutdown
            break
        time.sleep(0.01)  # the work
        if done % 5 == 0:
            job.progress({"done": done, "total": total})
    return done


async def summarize(text: str) -> str:
    """An async job: progress as a fraction."""
    job = asyncsched.current_job()
    assert job is not None
    await job.aprogress(0.5)
    return text.upper()


_calls = {"n": 0}


def flaky_call() -> str:
    """Fails twice with a TimeoutError, then succeeds: retried with backoff, only on TimeoutError."""
    _calls["n"] += 1
    if _calls["n"] < 3:
        raise TimeoutError("the API did not answer")
    return "answered"


async def main() -> None:
    url = os.environ.get("REDIS_URL") or "memory://job-context-example"
    settings = Settings(redis_url=url)
    events: list[Any] = []
    async with TaskQueue(url, settings=settings) as queue, EventBus(url, settings=settings) as bus:
        await bus.subscribe("example", "task.progress", lambda e: events.append(e.payload["progress"]))
        # jobs name functions of an importable module (this file, as `job_context`)
        rows = await queue.enqueue("job_context:import_rows", args=(20,))
        text = await queue.enqueue("job_context:summarize", args=("hello",))
        # base 0 s is not allowed; a small base keeps the example fast (the retries wait 0.1 s then 0.2 s,
        # rounded to whole seconds in RQ's scheduled registry)
        retry = Retry(3, backoff="exponential", base=0.1, cap=5, jitter=True, on=TimeoutError)
        flaky = await queue.enqueue("job_context:flaky_call", retry=retry)
        async with Worker(redis=url, settings=settings, hooks=AppHooks(), scheduler_interval=0.1) as worker:
            runner = asyncio.create_task(worker.run())
            print("rows:", await queue.result(rows, wait=30), (await queue.job(rows)).progress)
            print("text:", await queue.result(text, wait=30))
            print(
                "flaky:",
                await queue.result(flaky, wait=30),
                "after",
                (await queue.job(flaky)).attempt,
                "attempts",
            )
            worker.request_stop()
            await runner
        print("progress events:", len(events))


if __name__ == "__main__":
    asyncio.run(main())
