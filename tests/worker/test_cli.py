"""``asyncsched worker`` and ``python -m asyncsched.worker``."""

from __future__ import annotations

import subprocess
import sys

from asyncsched.cli import main
from asyncsched.config import Settings, set_settings
from asyncsched.queue import JobStatus
from asyncsched.sync import TaskQueue
from tests import jobs


def test_asyncsched_worker_burst(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url)
    try:
        with TaskQueue(redis_url, settings=settings) as q:
            job_id = q.enqueue(jobs.add, args=(1, 2), queue="cli")
            code = main(["--redis-url", redis_url, "worker", "--burst", "cli", "--name", "cli-worker"])
            assert code == 0
            assert q.status(job_id) == JobStatus.SUCCESS
            assert q.job(job_id).worker_name == "cli-worker"
    finally:
        set_settings(None)


def test_module_entry_point_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asyncsched.worker", "--help"], capture_output=True, text=True, check=True
    )
    assert "--concurrency" in out.stdout
    assert "--orphan-policy" in out.stdout


def test_bad_serializer_option(redis_url: str) -> None:
    try:
        code = main(["--redis-url", redis_url, "worker", "--burst", "--serializers", "yaml"])
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    finally:
        set_settings(None)
    assert code != 0


def test_suspend_and_resume_commands(redis_url: str, capsys: object) -> None:
    from rq.suspension import is_suspended

    from tests.rqhelp import sync_redis

    settings = Settings(redis_url=redis_url)
    conn = sync_redis(redis_url)
    try:
        with TaskQueue(redis_url, settings=settings) as q:
            job_id = q.enqueue(jobs.add, args=(1, 2))
            assert main(["--redis-url", redis_url, "suspend"]) == 0
            assert is_suspended(conn)  # RQ's own check sees it
            assert main(["--redis-url", redis_url, "worker", "--burst"]) == 0
            assert q.status(job_id) == JobStatus.QUEUED  # a suspended burst worker exits, runs nothing
            assert main(["--redis-url", redis_url, "resume"]) == 0
            assert not is_suspended(conn)
            assert main(["--redis-url", redis_url, "worker", "--burst"]) == 0
            assert q.status(job_id) == JobStatus.SUCCESS
            assert main(["--redis-url", redis_url, "suspend", "--duration", "60"]) == 0
            assert 0 < conn.ttl("rq:suspended") <= 60
            assert main(["--redis-url", redis_url, "suspend", "--duration", "0"]) == 2
    finally:
        conn.close()
        set_settings(None)
