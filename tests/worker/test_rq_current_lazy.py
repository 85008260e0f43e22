"""``rq.get_current_job()`` inside our jobs without the worker importing ``rq`` itself: a worker process
where nothing imported ``rq`` starts without it (it costs ~5.6 MB of memory a worker), and a job that
imports ``rq`` only when it runs still sees itself as RQ's current job. In a fresh interpreter: this test
process has imported ``rq`` long before."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from asyncsched.config import Settings
    from asyncsched.queue import TaskQueue
    from asyncsched.testing import run_burst

    async def main(url):
        settings = Settings(redis_url=url)
        async with TaskQueue(url, settings=settings) as q:
            await q.enqueue("tests.jobs.rq_current_lazily", job_id="lazy-1")
            await run_burst(["default"], redis=url, settings=settings)
            print(await q.result("lazy-1"), "rq.job" in sys.modules)

    asyncio.run(main(sys.argv[1]))
    """
)


def test_rq_get_current_job_sees_a_job_that_imports_rq_as_it_runs(redis_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, redis_url],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    # the job found rq.job not imported (the worker did not import it) and still saw itself
    assert out.stdout.split() == ["False:lazy-1", "True"]
