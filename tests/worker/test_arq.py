"""Jobs an arq producer enqueued (the real ``arq`` package), run by our worker; results read by arq."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from asyncsched.config import Settings
from asyncsched.testing import run_burst

# the asyncsched[arq] extra: `nox -s arq_compat` installs it (arq pins redis<6, so the main test
# environment, on the newest redis-py, does not have it)
arq = pytest.importorskip("arq", reason="needs the asyncsched[arq] extra: nox -s arq_compat")
pytestmark = pytest.mark.arq


async def arq_pool(url: str) -> object:
    from arq.connections import RedisSettings, create_pool

    parts = urlsplit(url)
    return await create_pool(RedisSettings(host=parts.hostname or "127.0.0.1", port=parts.port or 6379))


async def test_arq_jobs_run_and_results_reach_arq(real_redis_url: str) -> None:
    pool = await arq_pool(real_redis_url)
    try:
        ok = await pool.enqueue_job("arq_add", 2, 3)  # type: ignore[attr-defined]
        bad = await pool.enqueue_job("arq_fail", "nope")  # type: ignore[attr-defined]
        unknown = await pool.enqueue_job("not_registered")  # type: ignore[attr-defined]
        settings = Settings(redis_url=real_redis_url)
        worker = await run_burst(
            redis=real_redis_url, settings=settings, accept_pickle=True, arq="tests.jobs:ArqSettings"
        )
        assert worker.processed == 3
        assert await ok.result(timeout=5) == 5
        with pytest.raises(ValueError, match="nope"):
            await bad.result(timeout=5)
        with pytest.raises(LookupError, match="not_registered"):
            await unknown.result(timeout=5)
        assert await pool.zcard("arq:queue") == 0  # type: ignore[attr-defined]
        assert (await ok.info()).success  # type: ignore[union-attr]
    finally:
        await pool.aclose()  # type: ignore[attr-defined]


async def test_pickled_arq_jobs_refused_without_accept_pickle(real_redis_url: str) -> None:
    pool = await arq_pool(real_redis_url)
    try:
        job = await pool.enqueue_job("arq_add", 1, 1)  # type: ignore[attr-defined]
        await run_burst(
            redis=real_redis_url, settings=Settings(redis_url=real_redis_url), arq={"arq_add": asyncio.sleep}
        )
        with pytest.raises(PermissionError, match="does not accept pickle"):
            await job.result(timeout=5)
    finally:
        await pool.aclose()  # type: ignore[attr-defined]


def test_worker_cli_runs_arq_jobs(real_redis_url: str) -> None:
    from asyncsched.cli import main
    from asyncsched.config import set_settings

    async def enqueue() -> str:
        pool = await arq_pool(real_redis_url)
        try:
            job = await pool.enqueue_job("arq_add", 20, 22)  # type: ignore[attr-defined]
            return str(job.job_id)
        finally:
            await pool.aclose()  # type: ignore[attr-defined]

    async def result(job_id: str) -> object:
        from arq.jobs import Job

        pool = await arq_pool(real_redis_url)
        try:
            return await Job(job_id, pool).result(timeout=5)  # type: ignore[arg-type]
        finally:
            await pool.aclose()  # type: ignore[attr-defined]

    job_id = asyncio.run(enqueue())
    argv = ["--redis-url", real_redis_url, "worker", "--burst", "--accept-pickle"]
    try:
        assert main([*argv, "--arq", "tests.jobs:ArqSettings"]) == 0
    finally:
        set_settings(None)
    assert asyncio.run(result(job_id)) == 42


class RecordingHooks:
    """Worker hooks (issue 17) that record what they saw; ``refuse``: before_job raises."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.seen: list[tuple[object, ...]] = []

    async def on_startup(self, resources: dict[str, object]) -> None:
        resources["pool"] = "pool-1"

    async def before_job(self, job: object) -> None:
        from asyncsched.worker import CurrentJob, current_job

        assert isinstance(job, CurrentJob)
        assert current_job() is job
        self.seen.append(("before", job.id, job.queue, job.attempt, job.resources.get("pool")))
        if self.refuse:
            raise RuntimeError("not today")

    def after_job(self, job: object) -> None:  # a def hook: run in the worker's job threads
        from asyncsched.worker import CurrentJob

        assert isinstance(job, CurrentJob)
        self.seen.append(("after", job.id, job.outcome, job.result, repr(job.error)))


async def test_worker_hooks_run_around_arq_jobs(real_redis_url: str) -> None:
    pool = await arq_pool(real_redis_url)
    hooks = RecordingHooks()
    try:
        ok = await pool.enqueue_job("arq_add", 2, 3)  # type: ignore[attr-defined]
        bad = await pool.enqueue_job("arq_fail", "nope")  # type: ignore[attr-defined]
        worker = await run_burst(
            redis=real_redis_url,
            settings=Settings(redis_url=real_redis_url),
            accept_pickle=True,
            arq="tests.jobs:ArqSettings",
            hooks=hooks,
        )
        assert worker.processed == 2
        assert await ok.result(timeout=5) == 5
        ok_id, bad_id = ok.job_id, bad.job_id
        befores = sorted(s for s in hooks.seen if s[0] == "before")
        assert befores == sorted(
            [("before", ok_id, "arq:queue", 1, "pool-1"), ("before", bad_id, "arq:queue", 1, "pool-1")]
        )
        afters = {s[1]: s[2:] for s in hooks.seen if s[0] == "after"}
        assert afters[ok_id] == ("finished", 5, "None")
        assert afters[bad_id] == ("failed", None, "ValueError('nope')")
    finally:
        await pool.aclose()  # type: ignore[attr-defined]


async def test_a_failing_before_job_hook_fails_the_arq_job_without_running_it(real_redis_url: str) -> None:
    pool = await arq_pool(real_redis_url)
    hooks = RecordingHooks(refuse=True)
    try:
        job = await pool.enqueue_job("arq_add", 2, 3)  # type: ignore[attr-defined]
        await run_burst(
            redis=real_redis_url,
            settings=Settings(redis_url=real_redis_url),
            accept_pickle=True,
            arq="tests.jobs:ArqSettings",
            hooks=hooks,
        )
        with pytest.raises(RuntimeError, match="not today"):
            await job.result(timeout=5)
        assert [s[0] for s in hooks.seen] == ["before", "after"]
        assert hooks.seen[1][2] == "failed"
    finally:
        await pool.aclose()  # type: ignore[attr-defined]
