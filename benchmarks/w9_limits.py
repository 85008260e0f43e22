"""W9: a rate-limited workload. N no-op jobs under one flow limit of R starts/s, drained by worker processes.

Two runs on a fresh redis-server, same N, same worker command (``--burst``, so each worker exits when done):

* **limited**: every job has ``rate_limit="bench:R/s"``. Reported: the rate reached, ``(N - R) / (last
  start - first start)`` from the jobs' ``started_at`` (the first R start at once, each later one needs a
  freed start), as a share of R; and the workers' CPU time (user + system, ``getrusage`` of the children).
* **unlimited**: the same jobs without a limit: the workers' CPU time for the same work.

It also reports the most starts found in any 1 s window (``max_starts_in_1s``; ``limit_held``: never above R).

The CPU the limit costs the workers (parking, waking, releasing) is limited minus unlimited; reported as a
share of the limited run's wall time (how much of a core waiting for the limit took) and of its CPU.

    python benchmarks/w9_limits.py [--n 3000] [--rate 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


async def noop() -> None:
    """The job (run by the workers, imported as ``w9_limits:noop``)."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _enqueue(url: str, n: int, rate_limit: str | None) -> list[str]:
    from asyncsched.config import Settings
    from asyncsched.queue import TaskQueue

    async with TaskQueue(url, settings=Settings(redis_url=url)) as q:
        jobs: list[dict[str, Any]] = [{"func": "w9_limits:noop", "rate_limit": rate_limit} for _ in range(n)]
        return await q.enqueue_many(jobs)


async def _starts(url: str, ids: list[str]) -> list[float]:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    try:
        async with r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(f"rq:job:{job_id}", "started_at")
            raw = await pipe.execute()
    finally:
        await r.aclose()
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    return sorted(datetime.strptime(v.decode(), fmt).timestamp() + 0.0 for v in raw if v)


def _run(url: str, n: int, workers: int, rate_limit: str | None) -> dict[str, Any]:
    ids = asyncio.run(_enqueue(url, n, rate_limit))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.path.join(ROOT, "src"), ROOT])}
    cmd = [sys.executable, "-m", "asyncsched.worker", "--redis-url", url, "--no-scheduler", "--burst"]
    cpu0, t0 = _children_cpu(), time.monotonic()
    procs = [subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL) for _ in range(workers)]
    for proc in procs:
        proc.wait(600)
    wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
    starts = asyncio.run(_starts(url, ids))
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "started": len(starts), "starts": starts}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    opts = parser.parse_args()
    sys.path[:0] = [os.path.join(ROOT, "src"), ROOT]  # this checkout's asyncsched, and its test rig
    from tests.limit_jobs import max_in_window
    from tests.servers import redis_server

    with redis_server() as srv:
        limited = _run(srv.url, opts.n, opts.workers, f"bench:{opts.rate}/s")
    with redis_server() as srv:
        free = _run(srv.url, opts.n, opts.workers, None)
    starts = limited.pop("starts")
    free.pop("starts")
    span = starts[-1] - starts[0]
    reached = (len(starts) - opts.rate) / span if span > 0 else 0.0
    extra = limited["cpu_s"] - free["cpu_s"]
    densest = max_in_window(starts, 1.0 - 1e-5)  # started_at is text with microseconds: allow its rounding
    result = {
        "n": opts.n,
        "limit_per_s": opts.rate,
        "workers": opts.workers,
        "reached_per_s": round(reached, 1),
        "reached_share": round(reached / opts.rate, 4),
        "limited": limited,
        "unlimited": free,
        "max_starts_in_1s": densest,
        "limit_held": densest <= opts.rate,
        "waiting_cpu_s": round(extra, 3),
        "waiting_cpu_share_of_wall": round(extra / limited["wall_s"], 4),
        "waiting_cpu_share_of_cpu": round(extra / limited["cpu_s"], 4),
        "valid": limited["started"] == opts.n and free["started"] == opts.n,
    }
    print("BENCH-RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
