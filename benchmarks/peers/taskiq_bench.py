"""taskiq runner: ``await task.kiq(...)`` on RedisStreamBroker; worker = ``taskiq worker --workers 1``."""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Adapter, main


def _tasks() -> Any:
    """The tasks module, imported after ``main`` has put the Redis URL in the environment."""
    import tasks_taskiq

    return tasks_taskiq


class Taskiq(Adapter):
    name = "taskiq"
    dist = "taskiq"

    async def open(self) -> None:
        await _tasks().broker.startup()  # declares the consumer group, so pre-queued jobs are seen

    async def close(self) -> None:
        await _tasks().broker.shutdown()

    async def enqueue(self, func: str, i: int, t: float = 0.0) -> None:
        task = getattr(_tasks(), func)
        if func == "sleepy":
            await task.kiq(i)
        else:
            await task.kiq(i, t)

    def worker_cmd(self, workload: str) -> list[str]:
        return [
            os.path.join(os.path.dirname(sys.executable), "taskiq"),
            "worker",
            "tasks_taskiq:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(self.opts.concurrency),
            "--log-level",
            "WARNING",
        ]

    def config(self, workload: str) -> dict[str, Any]:
        return {
            "worker": f"taskiq worker --workers 1 --max-async-tasks {self.opts.concurrency} "
            "(RedisStreamBroker, "
            "the broker taskiq-redis recommends; acks on)",
            "producer": "await task.kiq(...), 100 concurrent coroutines",
            "stores": "nothing per job beyond the stream entry (no result backend: no status, no result)",
        }


if __name__ == "__main__":
    main(Taskiq)
