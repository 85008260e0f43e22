"""arq runner: `ArqRedis.enqueue_job`; worker = `arq.worker.Worker` (max_jobs=100), default or fast poll."""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Adapter, main
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings


class Arq(Adapter):
    name = "arq"
    dist = "arq"

    def __init__(self, url: str, opts: Any) -> None:
        super().__init__(url, opts)
        self.poll_delay = 0.01 if opts.variant == "fast" else 0.5
        if opts.variant == "fast":
            self.name = "arq-fast"
        self.pool: ArqRedis | None = None

    async def open(self) -> None:
        self.pool = await create_pool(RedisSettings.from_dsn(self.url))

    async def close(self) -> None:
        assert self.pool is not None
        await self.pool.aclose()

    async def enqueue(self, func: str, i: int, t: float = 0.0) -> None:
        assert self.pool is not None
        if func == "noop":
            await self.pool.enqueue_job(func, i, t)
        else:
            await self.pool.enqueue_job(func, i)

    def worker_cmd(self, workload: str) -> list[str]:
        return [sys.executable, "tasks_arq.py"]

    def worker_env(self, workload: str) -> dict[str, str]:
        return {"BENCH_ARQ_POLL_DELAY": str(self.poll_delay)}

    def config(self, workload: str) -> dict[str, Any]:
        return {
            "worker": f"arq Worker(max_jobs={self.opts.concurrency}, poll_delay={self.poll_delay}) "
            "via run_worker",
            "producer": "ArqRedis.enqueue_job, 100 concurrent coroutines",
            "stores": "job + result (keep_result 3600 s default)",
        }


if __name__ == "__main__":
    main(Arq)
