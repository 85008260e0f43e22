"""asyncsched runner: ``TaskQueue.enqueue`` / ``enqueue_many``; one ``Worker`` process (concurrency 100).

Also the asyncsched-only workloads: W5 (``EventBus`` publish→callback) and W6 (``TaskScheduler`` with
10,000 schedules).
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Adapter, main


class Asyncsched(Adapter):
    name = "asyncsched"
    dist = "asyncsched"

    def __init__(self, url: str, opts: Any) -> None:
        super().__init__(url, opts)
        self.queue: Any = None
        if opts.variant == "module":
            self.name = "asyncsched-m"

    async def open(self) -> None:
        from asyncsched.queue import TaskQueue

        self.queue = TaskQueue(self.url)
        await self.queue.__aenter__()

    async def close(self) -> None:
        await self.queue.__aexit__(None, None, None)

    async def enqueue(self, func: str, i: int, t: float = 0.0) -> None:
        args = (i,) if func == "sleepy" else (i, t)
        await self.queue.enqueue(f"tasks_asyncsched.{func}", args=args)

    async def enqueue_bulk(self, func: str, n: int, chunk: int = 1000) -> None:
        path = f"tasks_asyncsched.{func}"
        for start in range(0, n, chunk):
            await self.queue.enqueue_many(
                [{"func": path, "args": (i,)} for i in range(start, min(n, start + chunk))]
            )

    async def queued(self) -> int:
        counts = await self.queue.queue_counts()
        return int(counts.get("default", {}).get("queued", 0))

    def worker_cmd(self, workload: str) -> list[str]:
        if self.opts.variant == "module":  # the lean entry point: `python -m asyncsched.worker`
            return [sys.executable, "-m", "asyncsched.worker", "-c", str(self.opts.concurrency), "default"]
        # the CLI, as users run it: `asyncsched worker -c 100 default`
        bindir = os.path.dirname(sys.executable)
        cmd = [os.path.join(bindir, "asyncsched"), "worker", "-c", str(self.opts.concurrency), "default"]
        if os.environ.get("BENCH_METRICS_PORT"):  # the cost of the worker's metrics (docs/operations.md)
            cmd += ["--metrics-port", os.environ["BENCH_METRICS_PORT"]]
        return cmd

    def worker_env(self, workload: str) -> dict[str, str]:
        return {"REDIS_URL": self.url, "ASYNCSCHED_LOG_LEVEL": "WARNING"}

    def config(self, workload: str) -> dict[str, Any]:
        if workload == "W5":
            return {
                "bus": "EventBus.publish / publish_many (broadcast: one EVALSHA = PUBLISH + stream copy if a "
                "durable subscriber exists); subscriber: EventBus.subscribe with an async callback"
            }
        if workload == "W6":
            return {
                "scheduler": "TaskScheduler.run() in its own process, SQLite schedule store, 10,000 tasks",
            }
        return {
            "worker": f"asyncsched worker -c {self.opts.concurrency} default (threads: default 8), "
            "SIGTERM to stop",
            "producer": "TaskQueue.enqueue, 100 concurrent coroutines; bulk: enqueue_many in chunks of 1,000",
            "stores": "full RQ job hash, registries, results (RQ defaults), plus a lifecycle stream record "
            "per state change",
        }


def extra(adapter: Adapter, workload: str, n: int, tmp: str) -> dict[str, Any]:
    if workload == "W5":
        from w5_events import run_w5

        return run_w5("asyncsched", adapter.url, n, tmp)
    if workload == "W6":
        from w6_scheduler import run_w6

        return run_w6(adapter.url, n, tmp)
    raise SystemExit(f"unknown workload {workload}")


if __name__ == "__main__":
    main(Asyncsched, extra)
