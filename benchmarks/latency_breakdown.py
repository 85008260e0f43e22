"""Where W4's enqueue→start latency goes, for asyncsched: one job every 5 ms to an idle worker.

    python benchmarks/latency_breakdown.py [-n 2000]

Starts its own redis-server, runs a worker in a subprocess (as W4 does) and a producer here, and prints
percentiles of:

* ``enqueue call``: the producer's ``await TaskQueue.enqueue(...)`` (prepare, script call, reply);
* ``enqueue→written``: until the producer has written the script call to its socket (preparing the job);
* ``enqueue→claimed``: from just before ``enqueue`` until the worker holds the claim script's reply (the
  producer's script, the wake-up of the worker's BLMOVE and the claim script pipelined behind it);
* ``reply read→claimed``: from the moment the claim reply's bytes reach the worker's stream until the worker
  holds the parsed reply;
* ``claimed→start``: decoding the claimed job and starting it (the job function's first line);
* ``enqueue→start``: the W4 figure;
* Redis' own time for each script and command (``SLOWLOG`` with a 0 µs threshold), by name.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import redis  # noqa: E402
from _common import percentile  # noqa: E402
from tests.servers import redis_server  # noqa: E402

WORKER = r"""
import asyncio, json, os, signal, sys, time
sys.path.insert(0, os.environ["BENCH_DIR"])
from asyncsched.worker import Worker
from asyncsched.worker import _claim
starts, claims, arrivals = {}, {}, {}
last_read = [0.0]
feed = asyncio.StreamReader.feed_data
def timed_feed(self, data):
    last_read[0] = time.time()
    return feed(self, data)
asyncio.StreamReader.feed_data = timed_feed
import tasks_breakdown
tasks_breakdown.STARTS = starts
take = _claim.Claimer.take
def timed_take(self, reply):
    now = time.time()
    for i in range(0, len(reply), 4):
        claims[reply[i].decode()] = now
        arrivals[reply[i].decode()] = last_read[0]
    return take(self, reply)
_claim.Claimer.take = timed_take
async def main():
    async with Worker(["default"], redis=os.environ["BENCH_REDIS_URL"], concurrency=100) as worker:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.request_stop)
        await worker.run()
    with open(os.environ["BENCH_OUT"], "w") as fh:
        json.dump({"starts": starts, "claims": claims, "arrivals": arrivals}, fh)
asyncio.run(main())
"""

TASKS = """
import time
from typing import Any
STARTS = {}
async def noop(i, t=0.0):
    STARTS[i] = time.time()
"""


def row(name: str, values: list[float]) -> str:
    q = [percentile(values, p) for p in (0.5, 0.95, 0.99)]
    return f"{name:28s} p50 {q[0]:7.3f}  p95 {q[1]:7.3f}  p99 {q[2]:7.3f} ms  (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=2000)
    opts = parser.parse_args()
    from asyncsched.queue import TaskQueue
    from asyncsched.rq._scripts import SCRIPT_NAMES, source

    with redis_server() as server, tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "tasks_breakdown.py"), "w") as fh:
            fh.write(TASKS)
        out = os.path.join(tmp, "out.json")
        admin = redis.Redis.from_url(server.url)
        env = {**os.environ, "BENCH_DIR": tmp, "BENCH_REDIS_URL": server.url, "BENCH_OUT": out}
        env["ASYNCSCHED_LOG_LEVEL"] = "WARNING"
        worker = subprocess.Popen([sys.executable, "-c", WORKER], env=env)
        sent: dict[str, tuple[int, float, float]] = {}
        written: list[float] = []
        writelines = asyncio.StreamWriter.writelines
        last_write = [0.0]

        def timed_writelines(self: asyncio.StreamWriter, data: Any) -> None:
            last_write[0] = time.time()
            writelines(self, data)

        async def produce() -> None:
            asyncio.StreamWriter.writelines = timed_writelines  # type: ignore[method-assign]
            async with TaskQueue(server.url) as q:
                await q.enqueue("tasks_breakdown.noop", args=(-1, time.time()))
                await asyncio.sleep(1.0)
                admin.config_set("slowlog-log-slower-than", 0)
                admin.config_set("slowlog-max-len", 40 * opts.n + 1000)
                admin.slowlog_reset()
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                for i in range(opts.n):
                    delay = t0 + i * 0.005 - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    t = time.time()
                    job_id = await q.enqueue("tasks_breakdown.noop", args=(i, t))
                    sent[job_id] = (i, t, time.time())
                    written.append(max(last_write[0] - t, 0.0))
                await asyncio.sleep(0.5)

        asyncio.run(produce())
        slow = admin.slowlog_get(40 * opts.n + 1000)
        worker.terminate()
        worker.wait(30)
        with open(out) as fh:
            seen = json.load(fh)
        starts = {int(k): v for k, v in seen["starts"].items()}
        claims, arrivals = seen["claims"], seen["arrivals"]
        ms = 1000.0
        call = [(done - t) * ms for _, t, done in sent.values()]
        to_claim = [(claims[j] - t) * ms for j, (_, t, _) in sent.items() if j in claims]
        parsed = [(claims[j] - arrivals[j]) * ms for j in sent if j in claims]
        to_start = [(starts[i] - claims[j]) * ms for j, (i, _, _) in sent.items() if j in claims]
        total = [(starts[i] - t) * ms for i, t, _ in sent.values() if i in starts]
        print(f"{opts.n} jobs, one every 5 ms, redis-server on {server.url}")
        for name, values in (
            ("enqueue call", call),
            ("enqueue→written", [w * ms for w in written]),
            ("enqueue→claimed", to_claim),
            ("reply read→claimed", parsed),
            ("claimed→start", to_start),
            ("enqueue→start (W4)", total),
        ):
            print(row(name, values))
        names = {hashlib.sha1(source(n).encode()).hexdigest(): n for n in SCRIPT_NAMES}
        by_command: dict[str, list[float]] = collections.defaultdict(list)
        for entry in slow:
            words = entry["command"].split(b" ")
            name = words[0].decode().lower()
            if name == "evalsha" and len(words) > 1:
                name = "script " + names.get(words[1].decode(), "?")
            by_command[name].append(entry["duration"] / 1000.0)
        print("\nRedis time per command (SLOWLOG, includes the commands a script calls):")
        for name, values in sorted(by_command.items(), key=lambda kv: -sum(kv[1]))[:10]:
            print(row(name, values))
        admin.close()


if __name__ == "__main__":
    main()
