"""Raw redis-py pub/sub (the project venv's redis-py, hiredis parser): the ceiling for W5."""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Adapter, main


class RedisPy(Adapter):
    name = "redis-py"
    dist = "redis"

    def config(self, workload: str) -> dict[str, Any]:
        return {"subscriber": "PubSub.subscribe(channel=handler) + PubSub.run(), json payload"}


def extra(adapter: Adapter, workload: str, n: int, tmp: str) -> dict[str, Any]:
    from w5_events import run_w5

    if workload != "W5":
        raise SystemExit(f"redis-py only runs W5, not {workload}")
    return run_w5("redis-py", adapter.url, n, tmp)


if __name__ == "__main__":
    main(RedisPy, extra)
