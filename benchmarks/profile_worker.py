"""Profile one asyncsched process on a benchmark workload with py-spy and summarise where the time goes.

    python benchmarks/profile_worker.py [--workload W2|W3|W7|enqueue] [-n 20000] [--rate 250] [--out FILE]

For W2/W3/W7 the jobs are enqueued first, then the worker is started under ``py-spy record`` until the
queue is drained. ``enqueue`` profiles the producer (100 concurrent ``TaskQueue.enqueue`` coroutines).
Writes py-spy's collapsed stacks next to ``--out`` and prints the top functions by own ("self") samples
and by inclusive samples, plus the Redis commands per job. Needs ``pip install py-spy`` (root or ptrace).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from _common import LogWatcher, command_delta, commandstats  # noqa: E402
from tests.servers import redis_server  # noqa: E402


def summarise(collapsed: str, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    with open(collapsed) as fh:
        for line in fh:
            stack, _, count_s = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_s)
            total += count
            frames = [f for f in stack.split(";") if f]
            # py-spy frames look like "function (path/to/file.py:line)"; fold the line number away
            names = []
            for f in frames:
                name, _, where = f.partition(" (")
                path = where.rstrip(")").rsplit(":", 1)[0]
                short = "/".join(path.split("/")[-2:])
                names.append(f"{name} ({short})")
            if names:
                own[names[-1]] += count
            for n in set(names):
                incl[n] += count
    lines = [f"{total} samples", "", "top by own samples:"]
    lines += [f"  {c / total:6.1%}  {n}" for n, c in own.most_common(top)]
    lines += ["", "top by inclusive samples:"]
    lines += [f"  {c / total:6.1%}  {n}" for n, c in incl.most_common(top)]
    return "\n".join(lines)


async def _enqueue(url: str, func: str, n: int, concurrency: int = 100) -> None:
    from asyncsched.queue import TaskQueue

    async with TaskQueue(url) as q:
        it = iter(range(n))

        async def pump() -> None:
            for i in it:
                await q.enqueue(f"tasks_asyncsched.{func}", args=(i, 0.0) if func != "sleepy" else (i,))

        await asyncio.gather(*(pump() for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", default="W2", choices=["W2", "W3", "W7", "enqueue"])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "asyncsched-profile.txt"))
    opts = parser.parse_args()
    pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    func = {"W2": "noop", "W3": "sleepy", "W7": "sync_noop", "enqueue": "noop"}[opts.workload]
    tmp = tempfile.mkdtemp(prefix="bench-profile-")
    opts.out = os.path.abspath(opts.out)
    collapsed = opts.out + ".collapsed"
    import redis

    with redis_server() as server:
        r = redis.Redis.from_url(server.url)
        env = dict(os.environ, BENCH_LOG=os.path.join(tmp, "jobs.log"), BENCH_REDIS_URL=server.url)
        env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
        c0 = commandstats(r)
        if opts.workload == "enqueue":
            code = (
                f"import asyncio, sys; sys.path.insert(0, {HERE!r}); import profile_worker as p; "
                f"asyncio.run(p._enqueue({server.url!r}, 'noop', {opts.n}))"
            )
            subprocess.run(
                [
                    pyspy,
                    "record",
                    "-r",
                    str(opts.rate),
                    "-f",
                    "raw",
                    "-o",
                    collapsed,
                    "--",
                    sys.executable,
                    "-c",
                    code,
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            c1 = commandstats(r)
        else:
            asyncio.run(_enqueue(server.url, func, opts.n))
            c1 = commandstats(r)
            proc = subprocess.Popen(
                [
                    *(pyspy, "record", "-r", str(opts.rate), "-f", "raw", "-o", collapsed, "--"),
                    *(sys.executable, os.path.join(HERE, "asyncsched_worker.py")),
                ],
                env=env,
                cwd=HERE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            t0 = time.time()
            LogWatcher(env["BENCH_LOG"]).wait_for(opts.n, None, stall=60)
            print(f"drained {opts.n} in {time.time() - t0:.2f}s (incl. start-up, under py-spy)")
            c2 = commandstats(r)
            # SIGINT to py-spy's child: the worker stops gracefully and py-spy writes its file
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
                children = fh.read().split()
            for child in children:
                os.kill(int(child), 2)
            proc.wait(60)
            delta = command_delta(c1, c2)
            print(f"worker Redis commands per job: {sum(delta.values()) / opts.n:.2f}: {delta}")
        enq = command_delta(c0, c1)
        print(f"enqueue Redis commands per job: {sum(enq.values()) / opts.n:.2f}: {enq}")
        r.close()
    report = summarise(collapsed)
    with open(opts.out, "w") as fh:
        fh.write(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
