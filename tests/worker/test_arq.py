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
