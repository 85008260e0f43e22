"""Redis' time per call of a Lua script as split into functions (this tree) against a git revision's text.

Runs both texts alternately on one fresh redis-server, on the same data, and prints the median ``EVALSHA``
microseconds per call (``INFO commandstats``: the script's Lua time plus the commands it sends, which are
the same for both) of each. Covers ``promote`` (a batch of due jobs moved to their queue, each with its
lifecycle record; and a call that finds none due) and the scheduler's ``claim`` (a tick that runs, and one
skipped by its overlap policy). Splitting a script into functions costs a little per call: each ``local
function`` is a closure made anew on every call (about 0.03 µs each).

    python benchmarks/lua_split.py [--rev HEAD] [--rounds 40]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from asyncsched.rq import _scripts  # noqa: E402
from asyncsched.scheduler import _index  # noqa: E402
from servers import find_binary, free_port  # noqa: E402

RQ = "src/asyncsched/rq/scripts"


def _at(rev: str, path: str) -> str:
    done = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True)
    done.check_returncode()
    return done.stdout


def _rq_script(rev: str, name: str) -> str:
    """``rq/scripts/<name>.lua`` at ``rev``, assembled as :mod:`asyncsched.rq._scripts` does."""
    lines = _at(rev, f"{RQ}/{name}.lua").splitlines(keepends=True)
    for k, line in enumerate(lines):
        if line.startswith("--#include "):
            lines[k] = _at(rev, f"{RQ}/lib_{line.split()[1]}.lua")
    return _at(rev, f"{RQ}/lib_keys.lua") + "".join(lines)


def _usec(r: redis.Redis, sha: str, calls: Callable[[redis.Redis, str], int]) -> float:
    """Microseconds of EVALSHA per call over one round of ``calls`` (which returns how many it made)."""
    r.config_resetstat()
    n = calls(r, sha)
    stat = r.info("commandstats")["cmdstat_evalsha"]
    return float(stat["usec"]) / n


def promote_round(batch: int) -> Callable[[redis.Redis, str], int]:
    def run(r: redis.Redis, sha: str) -> int:
        r.flushall()
        pipe = r.pipeline(transaction=False)
        now = time.time()
        for i in range(batch):
            pipe.hset(f"rq:job:j{i}", mapping={"status": "scheduled", "origin": "q", "description": "m.f()"})
            pipe.zadd("rq:scheduled:q", {f"j{i}": int(now) - 10})
        pipe.execute()
        keys = ["rq:asyncsched:lifecycle", "rq:scheduler-lock:q", "rq:scheduled:q", "rq:queue:q"]
        args = ["rq", "w1", repr(now), "2026-01-01T00:00:00.000000Z", 60, 10000, batch, 1, "q"]
        for _ in range(1 if batch else 200):  # nothing due: 200 calls per round
            promoted = r.evalsha(sha, len(keys), *keys, *args)
            assert promoted[0] == batch, promoted  # type: ignore[index]
        return 1 if batch else 200

    return run


def claim_round(calls: int, policy: str) -> Callable[[redis.Redis, str], int]:
    def run(r: redis.Redis, sha: str) -> int:
        r.flushall()
        keys = ["s:next", "s:pending", "s:fired", "s:sig", "s:last", "s:held", "s:life"]
        r.zadd("s:next", {"t": 1000})
        if policy != "allow":  # the previous run is still leased: each tick is skipped
            r.hset("s:last", "t", "1 prev")
            r.zadd("s:pending", {"t:1": 1})
        for i in range(calls):
            tick, nxt = 1000 + i, 1001 + i
            args = [
                "t",
                tick,
                nxt,
                99999,
                1000,
                "",
                policy,
                "rq",
                "1.5",
                1000,
                "q",
                "a",
                "task",
                "m.f",
                tick,
                f"job{i}",
            ]
            out = r.evalsha(sha, len(keys), *keys, *args)
            assert out[0] == 1, out  # type: ignore[index]
        return calls

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="the revision to compare with (default HEAD)")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [find_binary("redis-server"), "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        r = redis.Redis(port=port)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        cases = [
            (
                "promote (200 due jobs)",
                _rq_script(args.rev, "promote"),
                _scripts.source("promote"),
                promote_round(200),
                200,
            ),
            (
                "promote (nothing due)",
                _rq_script(args.rev, "promote"),
                _scripts.source("promote"),
                promote_round(0),
                1,
            ),
            (
                "scheduler claim, run",
                _scripts.keyed(_at(args.rev, "src/asyncsched/scheduler/lua/claim.lua")),
                _index._SOURCES["claim"],
                claim_round(200, "allow"),
                1,
            ),
            (
                "scheduler claim, skip",
                _scripts.keyed(_at(args.rev, "src/asyncsched/scheduler/lua/claim.lua")),
                _index._SOURCES["claim"],
                claim_round(200, "skip"),
                1,
            ),
        ]
        for name, old, new, round_, per in cases:
            shas = [r.script_load(old), r.script_load(new)]
            times: list[list[float]] = [[], []]
            for k in range(args.rounds * 2):
                times[k % 2].append(_usec(r, shas[k % 2], round_) / per)
            a, b = statistics.median(times[0]), statistics.median(times[1])
            print(
                f"{name:28} {args.rev}: {a:7.2f} µs   this tree: {b:7.2f} µs   ({(b - a) / a:+.1%})"
                f"{'  per job' if per > 1 else '  per call'}"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
