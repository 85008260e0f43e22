"""One asyncsched worker process for the benchmarks: ``Worker`` on queue ``default``, stopped by SIGTERM.

Equivalent to what ``asyncsched worker`` does (settings from the environment, graceful stop on SIGTERM),
written out here so the benchmark does not depend on the CLI's flags.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from asyncsched.worker import Worker


async def main() -> None:
    threads = os.environ.get("BENCH_THREADS")
    async with Worker(
        ["default"],
        redis=os.environ["BENCH_REDIS_URL"],
        concurrency=int(os.environ.get("BENCH_CONCURRENCY", "100")),
        threads=int(threads) if threads else None,
    ) as worker:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        await worker.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
