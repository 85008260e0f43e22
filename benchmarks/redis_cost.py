"""Where Redis spends its CPU per job: ``INFO commandstats`` deltas over an enqueue and a W2-like drain.

Enqueues N no-op async jobs on a fresh redis-server, drains them with one burst worker, and prints per phase
each command's calls and microseconds per job (``evalsha`` includes the commands its script calls, which
are listed too: the script's own Lua time is ``evalsha`` less those), and Redis' CPU per job from
``INFO cpu``.

``--args w2`` enqueues W2's job and arguments ``(i, time.time())`` instead of no-op jobs without
arguments; ``--singles`` enqueues with ``TaskQueue.enqueue`` from 100 concurrent coroutines (as the peer
harness' W2 does) instead of ``enqueue_many``; ``--src CHECKOUT`` runs another checkout's asyncsched
(enqueue and worker) for an A/B.

    python benchmarks/redis_cost.py [--n 10000] [--args none|w2] [--singles] [--src CHECKOUT]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


async def noop() -> None:
    """The job (imported by the worker as ``redis_cost:noop``)."""


async def _enqueue(url: str, n: int, w2_args: bool = False, singles: bool = False) -> None:
    """Enqueue N no-op jobs; with ``w2_args`` W2's job and its arguments ``(i, time.time())``; with
    ``singles`` by ``TaskQueue.enqueue`` from 100 concurrent coroutines (the peer harness' W2 producer)."""
    from asyncsched.config import Settings
    from asyncsched.queue import TaskQueue

    def job(i: int) -> dict[str, object]:
        return (
            {"func": "tasks_asyncsched.noop", "args": (i, time.time())}
            if w2_args
            else {"func": "redis_cost:noop"}
        )

    async with TaskQueue(url, settings=Settings(redis_url=url)) as q:
        if not singles:
            await q.enqueue_many([job(i) for i in range(n)])
            return

        async def producer(k: int) -> None:
            for i in range(k, n, 100):
                spec = job(i)
                await q.enqueue(spec["func"], args=spec.get("args", ()))  # type: ignore[arg-type]

        await asyncio.gather(*(producer(k) for k in range(100)))


def _stats(r: redis.Redis) -> dict[str, tuple[int, int]]:
    return {k.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for k, v in r.info("commandstats").items()}


def _cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _report(name: str, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], n: int) -> None:
    print(f"== {name}")
    rows = []
    for cmd, (calls, usec) in after.items():
        c0, u0 = before.get(cmd, (0, 0))
        if calls - c0:
            rows.append((usec - u0, calls - c0, cmd))
    for usec, calls, cmd in sorted(rows, reverse=True):
        print(f"  {cmd:20} {calls / n:7.3f} calls/job {usec / n:7.2f} µs/job")
    print(f"  total {sum(c for _, c, _ in rows) / n:.2f} calls/job")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--args", choices=["none", "w2"], default="none", help="the jobs' arguments")
    parser.add_argument("--singles", action="store_true", help="100 concurrent TaskQueue.enqueue")
    parser.add_argument("--src", default=ROOT, help="the checkout of asyncsched to run (default: this one)")
    opts = parser.parse_args()
    n, src = opts.n, os.path.join(os.path.abspath(opts.src), "src")
    sys.path[:0] = [src, ROOT]
    from tests.servers import redis_server

    with redis_server() as srv:
        r = redis.Redis.from_url(srv.url)
        s0, c0 = _stats(r), _cpu(r)
        asyncio.run(_enqueue(srv.url, n, w2_args=opts.args == "w2", singles=opts.singles))
        s1, c1 = _stats(r), _cpu(r)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, src]), "BENCH_LOG": os.devnull}
        cmd = [sys.executable, "-m", "asyncsched.worker", "--redis-url", srv.url, "--no-scheduler", "--burst"]
        null = subprocess.DEVNULL
        subprocess.run(cmd, env=env, cwd=HERE, stdout=null, stderr=null, check=True)
        s2, c2 = _stats(r), _cpu(r)
        r.close()
    _report("enqueue", s0, s1, n)
    _report("worker", s1, s2, n)
    print(f"Redis CPU per job: enqueue {(c1 - c0) / n * 1e6:.1f} µs, worker {(c2 - c1) / n * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
