"""rq runner: sync producer (`Queue.enqueue` / `Queue.enqueue_many`), `SimpleWorker` (no fork per job)."""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import redis
import tasks_rq
from _common import Adapter, main
from rq import Queue


class RQ(Adapter):
    name = "rq"
    dist = "rq"
    sync_producer = True

    def __init__(self, url: str, opts: Any) -> None:
        super().__init__(url, opts)
        self.conn = redis.Redis.from_url(url)
        self.queue = Queue("default", connection=self.conn)

    def enqueue_sync(self, func: str, i: int, t: float = 0.0) -> None:
        args = (i, t) if func == "noop" and t else (i,)
        self.queue.enqueue(getattr(tasks_rq, func), *args)

    async def enqueue_bulk(self, func: str, n: int) -> None:
        fn = getattr(tasks_rq, func)
        self.queue.enqueue_many([Queue.prepare_data(fn, (i,)) for i in range(n)])

    async def queued(self) -> int:
        return len(self.queue)

    def worker_cmd(self, workload: str) -> list[str]:
        bindir = os.path.dirname(sys.executable)
        return [
            os.path.join(bindir, "rq"),
            "worker",
            "-u",
            self.url,
            "-w",
            "rq.worker.SimpleWorker",
            "--quiet",
        ]

    def config(self, workload: str) -> dict[str, Any]:
        return {
            "worker": "rq worker -w rq.worker.SimpleWorker --quiet (one job at a time, no fork per job)",
            "producer": "sync Queue.enqueue in one thread; bulk: Queue.enqueue_many",
            "stores": "full RQ job hash, registries, results (default result_ttl 500 s)",
        }


if __name__ == "__main__":
    main(RQ)
