"""current_job(): progress in RQ meta and as task.progress events, the cooperative cancel token of sync
jobs (cancel, timeout), the worker's shared resources, and worker hooks (issue 17)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from asyncsched.config import Settings
from asyncsched.events import Event, EventBus
from asyncsched.exceptions import ConfigurationError, WorkerHookError
from asyncsched.queue import JobStatus, TaskQueue
from asyncsched.testing import run_burst
from asyncsched.worker import Hooks, Worker
from asyncsched.worker._hooks import load_hooks
from tests import ctxjobs
from tests.waiting import eventually

pytestmark = pytest.mark.cluster  # the job context runs on a Redis Cluster too


async def test_progress_in_meta_and_events(queue: TaskQueue, redis_url: str, wsettings: Settings) -> None:
    got: list[Event] = []
    async with EventBus(redis_url, settings=wsettings) as bus:
        await bus.subscribe("observer", "task.progress", got.append)
        sync_id = await queue.enqueue(ctxjobs.report_progress, meta={"owner": "me"})
        async_id = await queue.enqueue(ctxjobs.areport_progress)
        await run_burst(redis=redis_url, settings=wsettings)
        seen = await queue.result(sync_id)
        assert seen["meta"] == {"owner": "me", "progress": {"done": 2, "total": 2}}
        assert seen["attempt"] == 1
        rec = await queue.job(sync_id)
        assert rec.meta == {"owner": "me", "progress": {"done": 2, "total": 2}}  # the job's own meta kept
        assert (await queue.job(async_id)).meta == {"progress": 1.0}
        # the async job's background report may be overtaken by the awaited one (then it is dropped)
        await eventually(
            lambda: len(got) >= 3 and got[-1].payload["progress"] in (1.0, {"done": 2, "total": 2})
        )
        await eventually(lambda: 1.0 in [e.payload["progress"] for e in got], what="the last report")
    by_job: dict[str, list[Any]] = {}
    for event in got:
        assert event.event_type == "task.progress"
        by_job.setdefault(event.payload["job_id"], []).append(event.payload["progress"])
        assert event.payload["function"].endswith("progress")
    assert by_job[sync_id] == [0.5, {"done": 2, "total": 2}]
    assert by_job[async_id] in ([0.25, 1.0], [1.0])


async def test_bad_progress_fails_the_job_naming_it(
    queue: TaskQueue, redis_url: str, wsettings: Settings
) -> None:
    job_id = await queue.enqueue(ctxjobs.bad_progress)
    await run_burst(redis=redis_url, settings=wsettings)
    rec = await queue.job(job_id)
    assert rec.status == JobStatus.FAILED
    assert rec.error is not None
    assert "progress: must be a fraction from 0 to 1" in rec.error


@pytest.mark.parametrize("redis_url", ["redis"], indirect=True)  # a real server: RQ's and another process's
async def test_rq_reads_progress_from_meta(queue: TaskQueue, redis_url: str, wsettings: Settings) -> None:
    from redis import Redis
    from rq.job import Job
    from rq.serializers import JSONSerializer

    job_id = await queue.enqueue(ctxjobs.report_progress)
    await run_burst(redis=redis_url, settings=wsettings)
    with Redis.from_url(redis_url) as conn:
        assert Job.fetch(job_id, connection=conn, serializer=JSONSerializer).meta == {
            "progress": {"done": 2, "total": 2}
        }


async def _running(worker: Worker) -> asyncio.Task[None]:
    return asyncio.create_task(worker.run())


async def test_cancel_sets_the_token_of_a_sync_job(
    queue: TaskQueue, redis_url: str, wsettings: Settings, tmp_path: Path
) -> None:
    started, seen = str(tmp_path / "started"), str(tmp_path / "seen")
    async with Worker(redis=redis_url, settings=wsettings, heartbeat_interval=0.2, lease=5) as worker:
        task = await _running(worker)
        job_id = await queue.enqueue(ctxjobs.cooperative, args=(started, seen))
        await eventually(lambda: ctxjobs.noted(started) == [job_id], what="the job running")
        assert await queue.cancel(job_id)
        await eventually(lambda: ctxjobs.noted(seen), what="the job seeing its token")
        assert ctxjobs.noted(seen) == ["cancelled=True"]
        await eventually(lambda: not worker.running_jobs, what="the job recorded")
        worker.request_stop()
        await task
    assert await queue.status(job_id) == JobStatus.CANCELLED  # its late return value is discarded
    assert await queue.result(job_id) is None


async def test_timeout_sets_the_token(
    queue: TaskQueue, redis_url: str, wsettings: Settings, tmp_path: Path
) -> None:
    started, seen = str(tmp_path / "started"), str(tmp_path / "seen")
    job_id = await queue.enqueue(ctxjobs.cooperative, args=(started, seen), timeout=1)
    await run_burst(redis=redis_url, settings=wsettings)
    rec = await queue.job(job_id)
    assert rec.status == JobStatus.FAILED
    assert "JobTimeout" in (rec.error or "")
    await eventually(lambda: ctxjobs.noted(seen) == ["cancelled=True"], what="the thread seeing its token")


async def test_shutdown_sets_the_token(
    queue: TaskQueue, redis_url: str, wsettings: Settings, tmp_path: Path
) -> None:
    started, seen = str(tmp_path / "started"), str(tmp_path / "seen")
    async with Worker(redis=redis_url, settings=wsettings, grace_period=0) as worker:
        task = await _running(worker)
        job_id = await queue.enqueue(ctxjobs.cooperative, args=(started, seen))
        await eventually(lambda: ctxjobs.noted(started) == [job_id], what="the job running")
        worker.request_stop()
        await task
    await eventually(lambda: ctxjobs.noted(seen) == ["cancelled=True"], what="the thread seeing its token")
    assert await queue.status(job_id) == JobStatus.QUEUED  # put back for another worker


async def test_hooks_resources_and_order(
    queue: TaskQueue, redis_url: str, wsettings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = str(tmp_path / "hooks")
    monkeypatch.setenv("CTX_HOOKS_LOG", log)
    a = await queue.enqueue(ctxjobs.uses_resources)
    b = await queue.enqueue(ctxjobs.auses_resources)
    c = await queue.enqueue("tests.jobs:fail")
    await run_burst(redis=redis_url, settings=wsettings, hooks="tests.ctxjobs:Hooks", concurrency=1)
    assert await queue.result(a) == "pool-1"
    assert await queue.result(b) == "pool-1"
    lines = ctxjobs.noted(log)
    assert lines[0] == "startup"
    assert lines[-1] == "shutdown pool-1"
    for job_id, outcome in ((a, "finished -"), (b, "finished -"), (c, "failed ValueError")):
        assert f"before {job_id} True" in lines
        assert f"after {job_id} {outcome}" in lines
        assert lines.index(f"before {job_id} True") < lines.index(f"after {job_id} {outcome}")


async def test_failing_job_hooks_are_logged_and_the_worker_goes_on(
    queue: TaskQueue, redis_url: str, wsettings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    def before(job: Any) -> None:
        if job.attempt == 1 and "first" in (job.description or ""):
            raise RuntimeError("no connection for this job")

    async def after(job: Any) -> None:
        raise KeyError("after hook bug")

    first = await queue.enqueue("tests.jobs:add", args=(1, 2), description="first")
    second = await queue.enqueue("tests.jobs:add", args=(3, 4))
    await run_burst(redis=redis_url, settings=wsettings, before_job=before, after_job=after)
    rec = await queue.job(first)
    assert rec.status == JobStatus.FAILED  # not run; the hook's error is the job's
    assert "before_job hook" in (rec.traceback or "")
    assert "no connection for this job" in (rec.error or "")
    assert await queue.result(second) == 7  # after_job raised: the outcome stands
    assert "after_job hook" in caplog.text
    assert "before_job hook" in caplog.text


async def test_failing_startup_stops_the_worker(
    redis_url: str, wsettings: Settings, queue: TaskQueue
) -> None:
    job_id = await queue.enqueue("tests.jobs:add", args=(1, 2))
    with pytest.raises(
        WorkerHookError, match=r"on_startup hook FailingStartup\.on_startup failed.*database is down"
    ):
        await run_burst(redis=redis_url, settings=wsettings, hooks="tests.ctxjobs:FailingStartup")
    worker = Worker(redis=redis_url, settings=wsettings, burst=True, hooks=ctxjobs.FailingStartup())
    with pytest.raises(WorkerHookError):
        await worker.run()  # without `async with` too
    assert await queue.status(job_id) == JobStatus.QUEUED  # no job was taken
    assert await queue.workers() == []


def test_load_hooks_by_reference() -> None:
    hooks = load_hooks("tests.ctxjobs:Hooks")
    assert hooks.on_startup is not None
    assert hooks.around_jobs
    with pytest.raises(ConfigurationError, match="has none of the hooks"):
        load_hooks("tests.ctxjobs:not_hooks")
    with pytest.raises(ConfigurationError, match=r"--hooks os:system"):
        load_hooks("os:system")  # not defined in os: the function-reference rule
    with pytest.raises(ConfigurationError, match="no module named"):
        load_hooks("tests.no_such_hooks:Hooks")
    with pytest.raises(ConfigurationError, match="must be callable"):
        Hooks(before_job=42)  # type: ignore[arg-type]


def test_no_hooks_no_per_job_work() -> None:
    worker = Worker(redis="memory://nohooks", settings=Settings(redis_url="memory://nohooks"))
    assert worker.hooks is None
    assert worker.executor.around is False
    only_startup = Worker(
        redis="memory://nohooks2", settings=Settings(redis_url="memory://nohooks2"), on_startup=print
    )
    assert only_startup.executor.around is False


@pytest.mark.parametrize("redis_url", ["redis"], indirect=True)  # a real server: RQ's and another process's
async def test_worker_cli_hooks_option(
    redis_url: str, wsettings: Settings, queue: TaskQueue, tmp_path: Path
) -> None:
    import sys

    log = str(tmp_path / "hooks")
    env = {**os.environ, "CTX_HOOKS_LOG": log, "REDIS_URL": redis_url}
    job_id = await queue.enqueue(ctxjobs.uses_resources)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asyncsched.worker", "--burst", "--no-scheduler",
        "--hooks", "tests.ctxjobs:Hooks",
        env=env,
    )  # fmt: skip
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    assert await queue.result(job_id) == "pool-1"
    assert ctxjobs.noted(log)[0] == "startup"
    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asyncsched.worker", "--burst", "--no-scheduler", "--hooks",
        "tests.ctxjobs:FailingStartup", env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(bad.communicate(), 60)
    assert bad.returncode == 2
    assert b"on_startup hook FailingStartup.on_startup failed: RuntimeError: database is down" in err
    assert b"Traceback" not in err


async def test_example_runs(redis_url: str) -> None:
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(root / "examples" / "job_context.py"),
        env={**os.environ, "REDIS_URL": redis_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "rows: 20 {'done': 20, 'total': 20}" in text
    assert "text: HELLO" in text
    assert "flaky: answered after 3 attempts" in text
    assert "progress events: 5" in text


async def test_run_command_and_runtime_take_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncsched.cli import build_parser
    from asyncsched.runtime import Runtime

    args = build_parser().parse_args(["run", "--hooks", "tests.ctxjobs:Hooks", "--no-http"])
    assert args.hooks == "tests.ctxjobs:Hooks"
    args = build_parser().parse_args(["worker", "--hooks", "tests.ctxjobs:Hooks"])
    assert args.hooks == "tests.ctxjobs:Hooks"
    log = str(tmp_path / "hooks")
    monkeypatch.setenv("CTX_HOOKS_LOG", log)
    settings = Settings(redis_url="memory://rt-hooks", database_url=f"sqlite+aiosqlite:///{tmp_path}/rt.db")
    async with Runtime(settings, http=False, worker_hooks=args.hooks) as runtime:
        assert runtime._worker.resources == {"pool": "pool-1"}
    assert ctxjobs.noted(log) == ["startup", "shutdown pool-1"]


async def test_with_job_passes_the_job_as_first_argument(
    queue: TaskQueue, redis_url: str, wsettings: Settings
) -> None:
    a = await queue.enqueue(ctxjobs.given_job, args=(1,))
    b = await queue.enqueue(ctxjobs.agiven_job, kwargs={"x": 2})
    await run_burst(redis=redis_url, settings=wsettings)
    assert await queue.result(a) == {"id": a, "x": 1, "cancelled": False}
    assert await queue.result(b) == {"id": b, "x": 2, "cancelled": False}
    with pytest.raises(RuntimeError, match="call it as an asyncsched job"):
        ctxjobs.given_job(1)


def test_worker_settings_typed_and_checked() -> None:
    """Worker's tuning keywords become one WorkerSettings (or a whole one is given); bad values name the
    field."""
    from asyncsched.exceptions import ConfigurationError
    from asyncsched.worker import WorkerSettings

    settings = Settings(redis_url="memory://wsettings")
    worker = Worker(["a", "b"], redis="memory://wsettings", settings=settings, concurrency=7, lease=20.9)
    assert (worker.cfg.queues, worker.cfg.concurrency, worker.cfg.lease) == (("a", "b"), 7, 20)
    assert worker.queues == ["a", "b"]
    assert not worker.burst
    given = WorkerSettings.resolve(settings, ["c"], burst=True, name="w-c")
    assert Worker(redis="memory://wsettings", settings=settings, config=given).name == "w-c"
    with pytest.raises(ConfigurationError, match="orphan_policy"):
        Worker(redis="memory://wsettings", settings=settings, orphan_policy="drop")
    with pytest.raises(ConfigurationError, match="heartbeat_interval"):
        Worker(redis="memory://wsettings", settings=settings, config=WorkerSettings(
            queues=("q",), name="n", prefix="rq", concurrency=1, threads=1, lease=5, heartbeat_interval=10
        ))  # fmt: skip
    with pytest.raises(TypeError, match="config"):
        Worker(["x"], redis="memory://wsettings", settings=settings, config=given)


async def test_the_whole_hash_is_read_on_first_use(
    queue: TaskQueue, redis: Any, redis_url: str, wsettings: Settings
) -> None:
    """The claim hands the worker only the fields it runs a job with; current_job().hash (and rq_job())
    is the job's whole hash, read when first asked for, as it is once started."""
    from asyncsched.rq.jobhash import CLAIMED_FIELDS

    a = await queue.enqueue(ctxjobs.whole_hash)
    b = await queue.enqueue(ctxjobs.awhole_hash, meta={"owner": "me"})
    await run_burst(redis=redis_url, settings=wsettings, name="w-hash")
    seen = await queue.result(a)
    assert seen["loaded_on_use"]
    assert set(seen["claimed"]) <= set(CLAIMED_FIELDS)
    assert "data" in seen["claimed"]
    assert {"origin", "created_at", "data", "status"} <= set(seen["hash"]) > set(seen["claimed"])
    whole = await redis.hgetall(queue.keys.job(a))  # the same fields as stored
    assert seen["hash"] == sorted(k.decode() for k in whole)
    origin = queue.keys.name(queue.name)  # on a cluster, the queue's hash-tagged name
    assert (seen["origin"], seen["rq_origin"], seen["status"]) == (origin, origin, "started")
    assert seen["worker"].endswith("w-hash")  # on a cluster, the worker name of the queue's slot
    seen_b = await queue.result(b)
    assert "origin" in seen_b["hash"]
    assert seen_b["meta"] == {"owner": "me"}
    assert seen_b["description"].startswith("tests.ctxjobs.awhole_hash")
