"""saq runner: ``Queue.enqueue``; worker = ``saq tasks_saq.settings`` (concurrency 100)."""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Adapter, main
from saq import Queue


class Saq(Adapter):
    name = "saq"
    dist = "saq"

    def __init__(self, url: str, opts: Any) -> None:
        super().__init__(url, opts)
        self.queue: Queue | None = None

    async def open(self) -> None:
        self.queue = Queue.from_url(self.url)
        await self.queue.connect()

    async def close(self) -> None:
        assert self.queue is not None
        await self.queue.disconnect()

    async def enqueue(self, func: str, i: int, t: float = 0.0) -> None:
        assert self.queue is not None
        if func == "sleepy":
            await self.queue.enqueue(func, i=i)
        else:
            await self.queue.enqueue(func, i=i, t=t)

    def worker_cmd(self, workload: str) -> list[str]:
        return [os.path.join(os.path.dirname(sys.executable), "saq"), "tasks_saq.settings"]

    def config(self, workload: str) -> dict[str, Any]:
        return {
            "worker": f"saq tasks_saq.settings (concurrency={self.opts.concurrency}; sync jobs on its "
            "default ThreadPoolExecutor)",
            "producer": "Queue.enqueue, 100 concurrent coroutines",
            "stores": "job hash with status and result (kept 600 s by default)",
        }


if __name__ == "__main__":
    main(Saq)
