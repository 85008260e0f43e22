"""No overlapping runs, and exact delays, in one process: ``python -m examples.overlap`` (from the repo root).

Nothing to install: an in-process Redis (``memory://``) and a temporary SQLite file. Two tasks fire every
second, but their job takes 2.5 s:

* ``skipper`` (``overlap: skip``, the default): the ticks that come while a run is under way do not run;
  each is recorded in the history as ``skipped``, with the reason.
* ``queuer`` (``overlap: queue``): one tick waits (``deferred``) and starts as soon as the run ended; the
  ticks after it, while one already waits, are skipped.

Then ``delay=0.25`` starts 250 ms after the enqueue, to the millisecond, never before.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import defaultdict

from asyncsched.config import Settings
from asyncsched.queue import TaskQueue
from asyncsched.scheduler import TaskScheduler
from asyncsched.store import Database, ExecutionRepository, Recorder
from asyncsched.worker import Worker


async def slow(seconds: float = 2.5) -> str:
    await asyncio.sleep(seconds)
    return "done"


def stamp() -> float:
    return time.time()


async def main(seconds: float = 6.0) -> dict[str, list[str]]:
    """Run for ``seconds``; print and return each task's run statuses, oldest first."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            redis_url="memory://overlap-example",
            database_url=f"sqlite+aiosqlite:///{tmp}/example.db",
            agent="example",
        )
        async with (
            Database(settings=settings, auto_migrate=True) as db,
            TaskQueue(settings=settings) as queue,
            TaskScheduler(settings=settings, db=db, queue=queue, fire=True) as scheduler,
            Worker(["default"], settings=settings, concurrency=4) as worker,
        ):
            running = asyncio.create_task(worker.run())
            before = time.time()
            started = await queue.result(await queue.enqueue("examples.overlap:stamp", delay=0.25), wait=10)
            print(f"delay=0.25 started {started - before:.3f} s after the enqueue")
            for name, overlap in (("skipper", "skip"), ("queuer", "queue")):
                await scheduler.register_task(
                    name=name,
                    type="interval",
                    schedule="1 second",
                    function="examples.overlap:slow",
                    overlap=overlap,
                )
            await asyncio.sleep(seconds)
            worker.request_stop()
            await running
            await Recorder(queue.redis, db=db, settings=settings, consumer="example").flush()
            page = await ExecutionRepository(db).list(agent_name="example", limit=100)
    runs: dict[str, list[str]] = defaultdict(list)
    for row in sorted(page.items, key=lambda r: r.job_id):
        runs[row.task_name or "?"].append(row.status)
        print(f"{row.task_name:8} {row.job_id[-10:]} {row.status:9} {row.error or ''}")
    return dict(runs)


if __name__ == "__main__":
    asyncio.run(main())
