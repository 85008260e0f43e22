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
