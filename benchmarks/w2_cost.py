"""The worker's CPU per job on W2's workload, compared between variants in alternating rounds.

W2's jobs/s swings by ±10% from run to run on a shared machine, which hides a 3% cost. The worker's own CPU
time per job (``getrusage`` of the child, user + system) is steadier, so this script compares variants by it:
each round enqueues N no-op async jobs on a fresh queue of one redis-server, runs one burst worker
(``python -m asyncsched.worker --burst``) until they are done, and records its CPU, less that of a burst
worker on an empty queue (start-up and shutdown), and its wall time. Rounds
alternate between the variants, so a drift in the machine's load falls on all of them alike.

Variants:

* ``--metrics``: the same code with and without ``--metrics-port`` (issue 18: metrics on stays within 3%);
* ``--base DIR``: this checkout's ``src`` against another checkout's (e.g. a ``git worktree`` of the commit
  before a change; issue 17: W2 without limits does not slow down by more than 3%).

    python benchmarks/w2_cost.py --metrics [--n 20000] [--rounds 5]
    python benchmarks/w2_cost.py --base /tmp/before [--n 20000] [--rounds 5]

Prints one line per round and, per variant, the median CPU µs/job and jobs/s, and the ratio to the first.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.servers import redis_server  # noqa: E402


async def noop() -> None:
    """The job (imported by the worker as ``w2_cost:noop``)."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _enqueue(src: str, url: str, queue: str, n: int) -> None:
    code = (
        "import asyncio\n"
        "from asyncsched.config import Settings\n"
        "from asyncsched.queue import TaskQueue\n"
        "async def main():\n"
        f"    async with TaskQueue({url!r}, settings=Settings(redis_url={url!r})) as q:\n"
        f"        jobs = [{{'func': 'w2_cost:noop', 'queue': {queue!r}}} for _ in range({n})]\n"
        "        await q.enqueue_many(jobs)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, HERE])}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=HERE)


def _round(src: str, extra: list[str], url: str, queue: str, n: int) -> tuple[float, float]:
    """Enqueue n jobs with ``src``'s code, drain them with one burst worker; (CPU µs/job, jobs/s).

    The CPU of a burst worker on an empty queue (start-up and shutdown) is measured first and subtracted,
    so the figure is the cost of the jobs alone."""
    redis.Redis.from_url(url).flushall()  # each round starts from an empty Redis: no drift from piled-up jobs
    idle_cpu, _ = _drain(src, extra, url, queue + "-empty")
    _enqueue(src, url, queue, n)
    cpu, wall = _drain(src, extra, url, queue)
    return (cpu - idle_cpu) / n * 1e6, n / wall


def _drain(src: str, extra: list[str], url: str, queue: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, HERE])}
    cmd = [sys.executable, "-m", "asyncsched.worker", "--redis-url", url, "--no-scheduler", "--burst", *extra]
    cmd.append(queue)
    cpu0, t0 = _children_cpu(), time.monotonic()
    subprocess.run(cmd, env=env, cwd=HERE, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _children_cpu() - cpu0, time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--metrics", action="store_true", help="metrics off against metrics on")
    group.add_argument("--base", help="another checkout whose src/ is the first variant")
    args = parser.parse_args()
    here_src = os.path.join(ROOT, "src")
    if args.metrics:
        variants = [("metrics off", here_src, []), ("metrics on", here_src, ["--metrics-port", "PORT"])]
    else:
        variants = [("base", os.path.join(args.base, "src"), []), ("this", here_src, [])]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    with redis_server() as server:
        url = server.url
        for r in range(args.rounds):
            for name, src, extra in variants:
                extra = [str(_free_port()) if a == "PORT" else a for a in extra]
                cpu_us, rate = _round(src, extra, url, f"w2cost{r}{name.replace(' ', '')}", args.n)
                load = os.getloadavg()[0]
                print(f"round {r + 1} {name:12} {cpu_us:8.1f} µs CPU/job {rate:9.0f} jobs/s  load {load:.2f}")
                results[name].append((cpu_us, rate))
    first = statistics.median(c for c, _ in results[variants[0][0]])
    print()
    for name, rows in results.items():
        cpu = statistics.median(c for c, _ in rows)
        rate = statistics.median(j for _, j in rows)
        print(f"{name:12} median {cpu:8.1f} µs CPU/job ({cpu / first:.3f}x) {rate:9.0f} jobs/s")


if __name__ == "__main__":
    main()
