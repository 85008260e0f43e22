"""What one enqueued job costs Redis and the producer, this checkout against another, in alternating rounds.

Three producer patterns, as the peer harness runs them (``benchmarks/peers/asyncsched_bench.py``):

* ``bulk``: ``enqueue_many`` in chunks of 1,000 no-op jobs without arguments;
* ``bulk-args``: the same with W2's arguments ``(i, time.time())``;
* ``singles``: ``enqueue`` from 100 concurrent coroutines with W2's arguments (``TaskQueue`` coalesces
  them into script calls of ~100 jobs).

Each round runs every pattern in a fresh producer process (``PYTHONPATH`` = the variant's ``src``) on one
redis-server, flushed before each; per job it records Redis' CPU (``INFO cpu``, user + system), Redis
commands (``INFO commandstats``) and the producer's own CPU (``time.process_time`` around the enqueue calls).
Rounds alternate between the variants, so a drift in the machine's load falls on both alike.

With ``--callgrind`` redis-server runs under valgrind instead, and the figure is the instructions it executes
per job (load-independent; ~8,800 instructions are ~1 µs on the machine of ``docs/performance.md``).

    python benchmarks/enqueue_cost.py --base /tmp/before [--n 20000] [--rounds 5]
    python benchmarks/enqueue_cost.py --base /tmp/before --callgrind [--n 5000] [--rounds 1]

``--listpack-value 128`` sets Redis' ``hash-max-listpack-value`` first (default 64): W2's job hashes (a
``data`` of 68 bytes) then stay listpacks instead of hash tables.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.servers import _wait_port, find_binary, free_port, redis_server  # noqa: E402

PATTERNS = ("bulk", "bulk-args", "singles")

_PRODUCER = """
import asyncio, json, sys, time
from asyncsched.config import Settings
from asyncsched.queue import TaskQueue
url, pattern, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
path = "tasks_asyncsched.noop"

async def main():
    async with TaskQueue(url, settings=Settings(redis_url=url)) as q:
        await q.enqueue(path)  # connected, scripts loaded: not counted
        t0 = time.process_time()
        if pattern == "singles":
            it = iter(range(n))
            async def pump():
                for i in it:
                    await q.enqueue(path, args=(i, time.time()))
            await asyncio.gather(*(pump() for _ in range(100)))
        else:
            for start in range(0, n, 1000):
                await q.enqueue_many([
                    {"func": path, "args": (i, time.time()) if pattern == "bulk-args" else ()}
                    for i in range(start, min(n, start + 1000))
                ])
        print(json.dumps({"cpu": time.process_time() - t0}))

asyncio.run(main())
"""


def _stats(r: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in r.info("commandstats").items()}


def _cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _produce(src: str, url: str, pattern: str, n: int) -> float:
    """Run one producer; its CPU seconds over the enqueue calls."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, HERE])}
    done = subprocess.run(
        [sys.executable, "-c", _PRODUCER, url, pattern, str(n)],
        env=env,
        cwd=HERE,
        check=True,
        capture_output=True,
    )
    return float(json.loads(done.stdout.decode().strip().splitlines()[-1])["cpu"])


class _Callgrind:
    """redis-server under callgrind; :meth:`phase` is the instructions it executed during a call."""

    def __init__(self, out_dir: str) -> None:
        self.port = free_port()
        self.out = os.path.join(out_dir, f"cg.{self.port}")
        server = [find_binary("redis-server"), "--port", str(self.port), "--save", "", "--appendonly", "no"]
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", *server]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "redis-server under valgrind", timeout=120)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dumps = 0

    def _dump(self) -> int:
        self.dumps += 1
        name = f"d{self.dumps}"
        subprocess.run(
            ["callgrind_control", "-d", name, str(self.proc.pid)], stdout=subprocess.DEVNULL, check=True
        )
        text = Path(max(glob.glob(self.out + ".*"), key=os.path.getmtime)).read_text()
        assert f"dump {name}" in text, "callgrind wrote no dump"
        found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        assert found
        return int(found.group(1))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def _round(src: str, url: str, pattern: str, n: int, cg: _Callgrind | None) -> dict[str, float]:
    r = redis.Redis.from_url(url)
    try:
        r.flushall()
        _produce(src, url, "bulk", 10)  # the variant's script loaded (NOSCRIPT once), not counted
        r.flushall()
        s0, c0 = _stats(r), _cpu(r)
        if cg is not None:
            cg._dump()
        py = _produce(src, url, pattern, n)
        instr = cg._dump() if cg is not None else 0
        s1, c1 = _stats(r), _cpu(r)
    finally:
        r.close()
    calls = sum(v - s0.get(k, 0) for k, v in s1.items() if k not in ("info", "flushall"))
    return {"redis_us": (c1 - c0) / n * 1e6, "cmds": calls / n, "py_us": py / n * 1e6, "instr": instr / n}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="another checkout whose src/ is the first variant")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--patterns", default=",".join(PATTERNS))
    parser.add_argument("--callgrind", action="store_true", help="count redis-server's instructions per job")
    parser.add_argument("--listpack-value", type=int, help="CONFIG SET hash-max-listpack-value first")
    args = parser.parse_args()
    variants = [("base", os.path.join(args.base, "src")), ("this", os.path.join(ROOT, "src"))]
    patterns = args.patterns.split(",")
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, redis_server() as server:
        cg = _Callgrind(tmp) if args.callgrind else None
        url = cg.url if cg is not None else server.url
        if args.listpack_value is not None:
            with redis.Redis.from_url(url) as r:
                r.config_set("hash-max-listpack-value", args.listpack_value)
        try:
            for rnd in range(args.rounds):
                for pattern in patterns:
                    for name, src in variants if rnd % 2 == 0 else variants[::-1]:
                        got = _round(src, url, pattern, args.n, cg)
                        rows.setdefault((pattern, name), []).append(got)
                        load = os.getloadavg()[0]
                        line = (f"round {rnd + 1} {pattern:9} {name:4} Redis {got['redis_us']:6.2f} µs "
                                f"{got['instr']:8,.0f} instr. {got['cmds']:5.2f} cmds, "
                                f"producer {got['py_us']:6.1f} µs CPU /job  load {load:.2f}")  # fmt: skip
                        print(line, flush=True)
        finally:
            if cg is not None:
                cg.stop()
    print("\nmedians per job (this / base):")
    for pattern in patterns:
        base, this = rows[(pattern, "base")], rows[(pattern, "this")]
        cells = []
        for key, unit in (
            ("redis_us", "µs Redis"),
            ("instr", "instr."),
            ("cmds", "cmds"),
            ("py_us", "µs producer"),
        ):
            a, b = statistics.median(x[key] for x in base), statistics.median(x[key] for x in this)
            if a:
                cells.append(f"{a:,.2f} -> {b:,.2f} {unit} ({b / a:.2f}x)")
        print(f"  {pattern:9} " + "; ".join(cells))


if __name__ == "__main__":
    main()
