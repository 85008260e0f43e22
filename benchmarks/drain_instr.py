"""Instructions redis-server executes per job over a whole enqueue and drain, for one or more checkouts.

For each checkout: a redis-server under valgrind's callgrind, N no-op async jobs enqueued with
``TaskQueue.enqueue_many`` (as ``redis_cost.py`` does), a dump, one burst worker of that checkout
(``python -m asyncsched.worker --burst``) until they are done, a dump. Prints per job the instructions of each
phase (everything the server ran: scripts, commands, networking, its cron) and the commands it counted
(``INFO commandstats``, a script's own commands included). Unlike ``INFO cpu`` the count does not depend on
the machine's load; ~8,800 instructions are ~1 µs here. Also prints ``MEMORY USAGE`` and the encoding of
20 job hashes, queued and finished.

``--args w2`` enqueues W2's job ``tasks_asyncsched.noop`` with its arguments ``(i, time.time())`` (a
``data`` of 68 bytes) instead of no-op jobs without arguments; ``--redis-config "NAME VALUE"`` (repeatable)
starts redis-server with that setting, e.g. ``--redis-config "hash-max-listpack-value 128"``.

    python benchmarks/drain_instr.py [--n 5000] [--args none|w2] [--redis-config "NAME VALUE"]
        CHECKOUT [CHECKOUT...]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import _wait_port, find_binary, free_port  # noqa: E402

Result = tuple[float, float, float, float, str, str]


def _calls(r: redis.Redis) -> int:
    return sum(v["calls"] for v in r.info("commandstats").values())


def _enqueue(tree: str, url: str, n: int, w2_args: bool) -> None:
    code = (
        "import asyncio, sys; sys.path.insert(0, 'benchmarks'); from redis_cost import _enqueue; "
        f"asyncio.run(_enqueue({url!r}, {n}{', w2_args=True' if w2_args else ''}))"
    )
    env = {**os.environ, "PYTHONPATH": os.path.join(tree, "src")}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, check=True)


def _hashes(r: redis.Redis, ids: list[bytes]) -> str:
    """``MEMORY USAGE`` (bytes) and encodings of these job hashes."""
    sizes = sorted(r.memory_usage(b"rq:job:" + i, samples=0) or 0 for i in ids)
    kinds = Counter(r.object("encoding", b"rq:job:" + i).decode() for i in ids)
    return f"{sizes[0]}-{sizes[-1]} B ({', '.join(f'{k} x{c}' for k, c in sorted(kinds.items()))})"


def measure(tree: str, n: int, w2_args: bool = False, config: tuple[str, ...] = ()) -> Result:
    """(enqueue instructions, enqueue commands, worker instructions, worker commands) per job, and the
    job hashes' memory and encodings queued and finished."""
    with tempfile.TemporaryDirectory() as tmp:
        return _measure(tree, n, free_port(), os.path.join(tmp, "cg"), w2_args, config)


def _measure(tree: str, n: int, port: int, out: str, w2_args: bool, config: tuple[str, ...]) -> Result:
    extra = []
    for line in config:
        name, *values = line.split()
        extra += [f"--{name}", *values]
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", find_binary("redis-server"),
           "--port", str(port), "--save", "", "--appendonly", "no", *extra]  # fmt: skip
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def dump(name: str) -> int:
        subprocess.run(["callgrind_control", "-d", name, str(srv.pid)], stdout=subprocess.DEVNULL, check=True)
        time.sleep(0.5)
        text = Path(max(glob.glob(out + ".*"), key=os.path.getmtime)).read_text()
        found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        assert found
        assert f"dump {name}" in text
        return int(found.group(1))

    try:
        _wait_port(port, srv, "redis-server under valgrind", timeout=120)
        url = f"redis://127.0.0.1:{port}"
        r = redis.Redis(port=port)
        dump("start")
        c0 = _calls(r)
        _enqueue(tree, url, n, w2_args)
        enqueued, c1 = dump("enqueue"), _calls(r)
        ids = r.lrange("rq:queue:default", 0, -1)[:: max(1, n // 20)]  # 20 jobs spread over the queue
        queued = _hashes(r, ids)
        dump("memory")  # not counted
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([os.path.join(tree, "benchmarks"), os.path.join(tree, "src")]),
            "BENCH_LOG": os.devnull,  # W2's job writes its record there
        }
        worker = [sys.executable, "-m", "asyncsched.worker", "--redis-url", url, "--no-scheduler", "--burst"]
        null = subprocess.DEVNULL
        subprocess.run(
            worker, env=env, cwd=os.path.join(tree, "benchmarks"), stdout=null, stderr=null, check=True
        )
        c2 = _calls(r)
        drained = dump("drain")
        finished = _hashes(r, ids)
        r.close()
        return enqueued / n, (c1 - c0) / n, drained / n, (c2 - c1) / n, queued, finished
    finally:
        srv.terminate()
        srv.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--args", choices=["none", "w2"], default="none", help="the jobs' arguments")
    parser.add_argument(
        "--redis-config", action="append", default=[], help='e.g. "hash-max-listpack-value 128"'
    )
    parser.add_argument("trees", nargs="+", help="checkouts of asyncsched (e.g. . and a git worktree)")
    args = parser.parse_args()
    for tree in args.trees:
        e, ec, w, wc, queued, finished = measure(
            os.path.abspath(tree), args.n, args.args == "w2", tuple(args.redis_config)
        )
        print(
            f"{tree}: enqueue {e:,.0f} instr./job ({ec:.2f} commands), worker {w:,.0f} instr./job ({wc:.2f});"
            f" job hash {queued} queued, {finished} finished"
        )


if __name__ == "__main__":
    main()
