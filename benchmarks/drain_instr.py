"""Instructions redis-server executes per job over a whole enqueue and drain, for one or more checkouts.

For each checkout: a redis-server under valgrind's callgrind, N no-op async jobs enqueued with
``TaskQueue.enqueue_many`` (as ``redis_cost.py`` does), a dump, one burst worker of that checkout
(``python -m asyncsched.worker --burst``) until they are done, a dump. Prints per job the instructions of each
phase (everything the server ran: scripts, commands, networking, its cron) and the commands it counted
(``INFO commandstats``, a script's own commands included). Unlike ``INFO cpu`` the count does not depend on
the machine's load; ~8,800 instructions are ~1 µs here.

    python benchmarks/drain_instr.py [--n 5000] CHECKOUT [CHECKOUT...]
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
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import _wait_port, find_binary, free_port  # noqa: E402


def _calls(r: redis.Redis) -> int:
    return sum(v["calls"] for v in r.info("commandstats").values())


def _enqueue(tree: str, url: str, n: int) -> None:
    code = (
        "import asyncio, sys; sys.path.insert(0, 'benchmarks'); from redis_cost import _enqueue; "
        f"asyncio.run(_enqueue({url!r}, {n}))"
    )
    env = {**os.environ, "PYTHONPATH": os.path.join(tree, "src")}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, check=True)


def measure(tree: str, n: int) -> tuple[float, float, float, float]:
    """(enqueue instructions, enqueue commands, worker instructions, worker commands) per job."""
    with tempfile.TemporaryDirectory() as tmp:
        return _measure(tree, n, free_port(), os.path.join(tmp, "cg"))


def _measure(tree: str, n: int, port: int, out: str) -> tuple[float, float, float, float]:
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", find_binary("redis-server"),
           "--port", str(port), "--save", "", "--appendonly", "no"]  # fmt: skip
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
        _enqueue(tree, url, n)
        enqueued, c1 = dump("enqueue"), _calls(r)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([os.path.join(tree, "benchmarks"), os.path.join(tree, "src")]),
        }
        worker = [sys.executable, "-m", "asyncsched.worker", "--redis-url", url, "--no-scheduler", "--burst"]
        null = subprocess.DEVNULL
        subprocess.run(
            worker, env=env, cwd=os.path.join(tree, "benchmarks"), stdout=null, stderr=null, check=True
        )
        c2 = _calls(r)
        drained = dump("drain")
        r.close()
        return enqueued / n, (c1 - c0) / n, drained / n, (c2 - c1) / n
    finally:
        srv.terminate()
        srv.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("trees", nargs="+", help="checkouts of asyncsched (e.g. . and a git worktree)")
    args = parser.parse_args()
    for tree in args.trees:
        e, ec, w, wc = measure(os.path.abspath(tree), args.n)
        print(
            f"{tree}: enqueue {e:,.0f} instr./job ({ec:.2f} commands), worker {w:,.0f} instr./job ({wc:.2f})"
        )


if __name__ == "__main__":
    main()
