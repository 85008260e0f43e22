"""W5: event bus publish→callback throughput and latency, against raw redis-py pub/sub as the ceiling.

For each publishing mode a fresh subscriber process subscribes (asyncsched: ``EventBus.subscribe`` with an
``async def`` callback; redis-py: ``PubSub.subscribe(channel=handler)`` + ``PubSub.run()``), signals ready,
and the runner publishes N messages carrying ``(i, send time)``:

* ``awaited``: one publish at a time (``await bus.publish`` / ``await r.publish``);
* ``inflight``: 100 coroutines publishing concurrently;
* ``pipelined``: batches of 1,000 (``bus.publish_many`` / a redis-py pipeline).

Throughput is N over first publish → last callback; latency is callback time - send time. Valid when
every message arrived exactly once. Run as a script it is the subscriber process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
CHANNEL = "bench-w5"
MODES = ("awaited", "inflight", "pipelined")
BATCH = 1000


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --------------------------------------------------------------------------------------------- subscriber
class _Collector:
    def __init__(self, n: int) -> None:
        self.n = n
        self.ids: list[int] = []
        self.lat: list[float] = []
        self.first = self.last = 0.0
        self.done = asyncio.Event()

    def hit(self, i: int, sent: float) -> None:
        now = time.time()
        if not self.ids:
            self.first = now
        self.last = now
        self.ids.append(i)
        self.lat.append((now - sent) * 1000)
        if len(self.ids) >= self.n:
            self.done.set()

    async def wait(self, idle: float = 10.0) -> None:
        seen = -1
        while not self.done.is_set() and len(self.ids) != seen:
            seen = len(self.ids)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), idle)
        await asyncio.sleep(0.3)  # duplicates, if any, arrive now

    def summary(self) -> dict[str, Any]:
        return {
            "received": len(self.ids),
            "unique": len(set(self.ids)),
            "first": self.first,
            "last": self.last,
            "p50_ms": _percentile(self.lat, 0.5),
            "p99_ms": _percentile(self.lat, 0.99),
            "max_ms": max(self.lat, default=float("nan")),
        }


async def _subscribe(kind: str, url: str, n: int, ready: str, out: str) -> None:
    col = _Collector(n)
    if kind == "asyncsched":
        from asyncsched.events import EventBus

        async def on_event(event: Any) -> None:
            col.hit(event.payload["i"], event.payload["t"])

        async with EventBus(url) as bus:
            await bus.subscribe("bench", "bench.*", on_event)
            open(ready, "w").close()
            await col.wait()
    else:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(url)

        def handler(message: dict[str, Any]) -> None:
            d = json.loads(message["data"])
            col.hit(d["i"], d["t"])

        pubsub = r.pubsub()
        await pubsub.subscribe(**{CHANNEL: handler})
        task = asyncio.create_task(pubsub.run())
        while not pubsub.subscribed:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        open(ready, "w").close()
        await col.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pubsub.aclose()
        await r.aclose()
    with open(out, "w") as fh:
        json.dump(col.summary(), fh)


# --------------------------------------------------------------------------------------------- publisher
async def _publish(kind: str, url: str, mode: str, n: int) -> float:
    """Publish n messages in ``mode``; return the wall-clock time of the first publish."""
    if kind == "asyncsched":
        from asyncsched.events import Event, EventBus

        async with EventBus(url) as bus:
            t0 = time.time()
            if mode == "awaited":
                for i in range(n):
                    await bus.publish("bench.msg", "bench", {"i": i, "t": time.time()})
            elif mode == "inflight":
                it = iter(range(n))

                async def pump() -> None:
                    for i in it:
                        await bus.publish("bench.msg", "bench", {"i": i, "t": time.time()})

                await asyncio.gather(*(pump() for _ in range(100)))
            else:
                for start in range(0, n, BATCH):
                    now = time.time()
                    await bus.publish_many(
                        [
                            Event.create("bench.msg", "bench", {"i": i, "t": now})
                            for i in range(start, min(n, start + BATCH))
                        ]
                    )
            return t0
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    try:
        t0 = time.time()
        if mode == "awaited":
            for i in range(n):
                await r.publish(CHANNEL, json.dumps({"i": i, "t": time.time()}))
        elif mode == "inflight":
            it = iter(range(n))

            async def pump() -> None:
                for i in it:
                    await r.publish(CHANNEL, json.dumps({"i": i, "t": time.time()}))

            await asyncio.gather(*(pump() for _ in range(100)))
        else:
            for start in range(0, n, BATCH):
                now = time.time()
                async with r.pipeline(transaction=False) as pipe:
                    for i in range(start, min(n, start + BATCH)):
                        pipe.publish(CHANNEL, json.dumps({"i": i, "t": now}))
                    await pipe.execute()
        return t0
    finally:
        await r.aclose()


def run_w5(kind: str, url: str, n: int, tmp: str) -> dict[str, Any]:
    result: dict[str, Any] = {"n": n, "valid": True}
    for mode in MODES:
        ready, out = os.path.join(tmp, f"{mode}.ready"), os.path.join(tmp, f"{mode}.json")
        env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
        sub = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), kind, url, str(n), ready, out], cwd=HERE, env=env
        )
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(ready):
                if sub.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"W5 {kind} subscriber did not start (exit {sub.returncode})")
                time.sleep(0.02)
            t0 = asyncio.run(_publish(kind, url, mode, n))
            sub.wait(120)
        finally:
            if sub.poll() is None:
                sub.kill()
                sub.wait()
        with open(out) as fh:
            s = json.load(fh)
        ok = s["received"] == n and s["unique"] == n
        result["valid"] = result["valid"] and ok
        span = max(s["last"] - t0, 1e-9)
        result.update(
            {
                f"{mode}_msgs_per_s": n / span if ok else None,
                f"{mode}_p50_ms": s["p50_ms"],
                f"{mode}_p99_ms": s["p99_ms"],
                f"{mode}_max_ms": s["max_ms"],
                f"{mode}_received": s["received"],
            }
        )
    return result


if __name__ == "__main__":
    kind_, url_, n_, ready_, out_ = sys.argv[1:6]
    asyncio.run(_subscribe(kind_, url_, int(n_), ready_, out_))
