"""Flow limits: one rate limit shared by every job that calls an API, and a concurrency cap per tenant.

    python examples/flow_limits.py                       # embedded Redis (memory://)
    REDIS_URL=redis://localhost:6379/0 python examples/flow_limits.py

Twelve calls of two tenants, at most 10 starts per second for the whole "openai" key (every queue, every
worker on this Redis) and at most 2 running at once per tenant. A job over a limit waits out of its queue,
holding no worker slot, and starts as soon as the limit has room (see docs/flow-control.md).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from asyncsched.config import Settings
from asyncsched.queue import Limit, TaskQueue
from asyncsched.worker import Worker

STARTED = time.monotonic()


async def call_llm(prompt: str, tenant_id: str) -> str:
    print(f"{time.monotonic() - STARTED:5.2f}s  {tenant_id:6} {prompt} starts", flush=True)
    await asyncio.sleep(0.3)  # the API call
    return prompt.upper()


async def main() -> None:
    url = os.environ.get("REDIS_URL", "memory://flow-limits")
    settings = Settings(redis_url=url)
    # a policy of the function: every call of it is capped per tenant, whoever enqueues it
    policies = {
        "function:flow_limits:call_llm": Limit(max_concurrency=2, concurrency_key="tenant:{tenant_id}")
    }
    async with TaskQueue(url, settings=settings, limits=policies) as queue:
        for i in range(6):
            for tenant in ("acme", "globex"):
                await queue.enqueue(
                    "flow_limits:call_llm",
                    kwargs={"prompt": f"question {i}", "tenant_id": tenant},
                    rate_limit="openai:10/s",  # this call's own limit: a key shared with other functions
                )
        async with Worker(redis=url, settings=settings, concurrency=20, burst=True) as worker:
            await worker.run()  # burst: returns when every job ran
        print(f"done in {time.monotonic() - STARTED:.2f}s")
        for usage in await queue.limits_usage():  # as `asyncsched info` and GET /limits show them
            print(usage)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the worker imports flow_limits:call_llm
    asyncio.run(main())
