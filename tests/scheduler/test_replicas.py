"""Three real scheduler processes on one real Redis: every tick of a per-second task is enqueued once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis as syncredis

from asyncsched import _keys
from asyncsched.config import Settings
from asyncsched.queue import TaskQueue
from asyncsched.scheduler import TaskScheduler, job_id_for
from asyncsched.scheduler._index import from_ms
from asyncsched.scheduler._scheduler import LEASE
from asyncsched.store import Database

ROOT = Path(__file__).resolve().parents[2]
TASKS = """\
tasks:
  - name: every_second
    type: cron
    schedule: "* * * * * *"
    function: "tests.scheduler.conftest:jobs_fn"
    overlap: allow  # no worker runs the jobs: every tick is enqueued (this test is about claims)
"""


def _wait(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.mark.slow
async def test_three_scheduler_processes_enqueue_each_tick_exactly_once(
    real_redis_url: str, database_url: str, tmp_path: Path
) -> None:
    async with Database(database_url) as db:
        await db.migrate()
    tasks_file = tmp_path / "tasks.yaml"
    tasks_file.write_text(TASKS)
    env = {
        **os.environ,
        "REDIS_URL": real_redis_url,
        "DATABASE_URL": database_url,
        "ASYNCSCHED_LOG_LEVEL": "INFO",
    }
    cmd = [sys.executable, "-m", "asyncsched", "scheduler", "--tasks", str(tasks_file), "--agent", "replicas"]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    client = syncredis.Redis.from_url(real_redis_url)
    fired_key = _keys.sched_fired("rq")
    try:
        _wait(lambda: client.xlen(fired_key) >= 3)
        procs[0].send_signal(signal.SIGKILL)  # a replica dies; the others carry on
        procs[0].wait()
        start = client.xlen(fired_key)
        _wait(lambda: client.xlen(fired_key) >= start + 3)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        errors = []
        for proc in procs:
            try:
                errors.append(proc.communicate(timeout=60)[1].decode())
            except subprocess.TimeoutExpired:  # never leave a process behind, even when failing
                proc.kill()
                errors.append(proc.communicate()[1].decode() + "\n(did not stop on SIGTERM)")
        client.close()
    assert [p.returncode for p in procs[1:]] == [0, 0], errors

    settings = Settings(redis_url=real_redis_url, database_url=database_url)
    async with (
        Database(database_url) as db,
        TaskScheduler(settings=settings, db=db) as scheduler,
        TaskQueue(settings=settings) as queue,
    ):
        (task,) = await scheduler.list_tasks("replicas")
        # A tick the killed replica claimed but had not enqueued yet is enqueued by a survivor once its lease
        # expires: do now what a survivor would do after LEASE.
        await scheduler._reload()
        await scheduler._recover(datetime.now(UTC) + LEASE + timedelta(seconds=1))
        ticks = [tick for task_id, tick in await scheduler.index.fired() if task_id == task.id]
        jobs = await queue.list_jobs("default", limit=1000)
        assert len(ticks) >= 6
        assert len(set(ticks)) == len(ticks), "a tick was claimed twice"
        seconds = sorted(t // 1000 for t in ticks)
        assert seconds == list(range(seconds[0], seconds[-1] + 1)), "a tick was skipped"
        assert sorted(j.id for j in jobs) == sorted(job_id_for(task.id, from_ms(t)) for t in ticks)
        assert {j.scheduled_task_id for j in jobs} == {task.id}
        stored = await scheduler.get_task(task.id)
        assert stored.last_run_at is not None
