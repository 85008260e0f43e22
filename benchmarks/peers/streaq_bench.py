"""streaq runner: ``await task.enqueue(...)`` / ``Worker.enqueue_many``; worker = ``Worker.run_sync``."""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Adapter, main


def _tasks() -> Any:
    """The tasks module, imported after ``main`` has put the Redis URL in the environment."""
    import tasks_streaq

    return tasks_streaq


class Streaq(Adapter):
    name = "streaq"
    dist = "streaq"

    async def open(self) -> None:
        await _tasks().worker.__aenter__()

    async def close(self) -> None:
        await _tasks().worker.__aexit__(None, None, None)

    async def enqueue(self, func: str, i: int, t: float = 0.0) -> None:
        task = getattr(_tasks(), func)
        if func == "sleepy":
            await task.enqueue(i)
        else:
            await task.enqueue(i, t)

    async def enqueue_bulk(self, func: str, n: int) -> None:
        task = getattr(_tasks(), func)
        await _tasks().worker.enqueue_many([task.enqueue(i) for i in range(n)])

    async def queued(self) -> int:
        return await _tasks().worker.queue_size()

    def worker_cmd(self, workload: str) -> list[str]:
        return [sys.executable, "tasks_streaq.py"]

    def config(self, workload: str) -> dict[str, Any]:
        return {
            "worker": f"streaq Worker(concurrency={self.opts.concurrency}).run_sync() (as `streaq run`)",
            "producer": "await task.enqueue(...), 100 concurrent coroutines; bulk: Worker.enqueue_many",
            "stores": "task data + result (default TTLs)",
        }


if __name__ == "__main__":
    main(Streaq)
