"""Redis' time per call of a Lua script as split into functions (this tree) against a git revision's text.

Runs both texts alternately on one fresh redis-server, on the same data, and prints the median ``EVALSHA``
microseconds per call (``INFO commandstats``: the script's Lua time plus the commands it sends, which are
the same for both) of each. Covers ``promote`` (a batch of due jobs moved to their queue, each with its
lifecycle record; and a call that finds none due), the scheduler's ``claim`` (a tick that runs, and one
skipped by its overlap policy), and the worker's path: ``enqueue`` (a batch of queued jobs), ``claim`` (a
batch started) and ``finish`` (a batch finished), each timed alone on the data the others leave.
Splitting a script into functions costs a little per call: each ``local function`` is a closure made anew
on every call (about 0.03 µs each).

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
from asyncsched.rq._calls import ClaimCall, FinishCall  # noqa: E402
from asyncsched.rq.keys import RQKeys  # noqa: E402
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


STREAM = "rq:asyncsched:lifecycle"
TS = "2026-01-01T00:00:00.000000Z"


def _enqueue(r: redis.Redis, sha: str, batch: int, start: int = 0) -> None:
    """``batch`` queued jobs (ids ``j<start>``...) on queue ``q`` by enqueue.lua (``sha``), as one segment."""
    jobs = [a for i in range(start, start + batch) for a in (f"j{i}", "data", "m.f()", TS, "1767225600.0")]
    shared = ["origin", "q", "status", "queued"]
    head = ["q", "queued", "n", "", "0", "0", 2, *shared, 1, "kind", "enqueued", batch]
    out = r.evalsha(sha, 2, STREAM, "rq:queues", "rq", 10000, *head, *jobs)
    assert out == [1] * batch, out


def _claim(r: redis.Redis, sha: str, batch: int, first: int = 1) -> list[str]:
    """Claims ``batch`` jobs of ``q`` for worker ``w1`` by claim.lua (``sha``; execution numbers from
    ``first``): their execution ids."""
    call = ClaimCall(RQKeys("rq"), "w1", STREAM, "1767225601.0", TS, 60, batch, 10000, "", False, (), ("q",),
                     "0" * 20, first)  # fmt: skip
    out = r.evalsha(sha, len(call.to_keys()), *call.to_keys(), *call.to_args())
    assert len(out) == 4 * batch, out  # type: ignore[arg-type]
    return [e.decode() for e in out[1::4]]  # type: ignore[index]


def _finish(r: redis.Redis, sha: str, jobs: tuple[tuple[str, str, str], ...]) -> None:
    """``jobs`` (id, execution, queue) recorded as finished by finish.lua (``sha``)."""
    fields = ["finished", "1", "", "", "", "500", "1767226000", "", "", "0"]  # fields 4-13
    fields += ["1767225601.0", "1767225601.1", "0.1", "finished", "", "", "", "", "1", "", "", "m.f"]
    fields += ["", "", "", "", ""]  # 26-30
    records = tuple("\x1e".join([j, e, q, *fields]) for j, e, q in jobs)
    call = FinishCall(RQKeys("rq"), "w1", STREAM, 10000, TS, 1767225601.2, 30, jobs, records)
    out = r.evalsha(sha, len(call.to_keys()), *call.to_keys(), *call.to_args())
    assert out == [1] * len(jobs), out


def worker_round(script: str, batch: int, current: dict[str, str]) -> Callable[[redis.Redis, str], int]:
    """``script`` (enqueue, claim or finish) timed alone on calls of ``batch`` jobs (one call, or 50 of one
    job); the others (this tree's, ``current``: name -> sha) prepare its data before the statistics are
    reset."""
    calls = 1 if batch > 1 else 50

    def run(r: redis.Redis, sha: str) -> int:
        r.flushall()
        r.hset("rq:worker:w1", "state", "idle")
        if script != "enqueue":
            _enqueue(r, current["enqueue"], batch * calls)
        execs = _claim(r, current["claim"], batch * calls) if script == "finish" else []
        r.config_resetstat()
        for c in range(calls):
            if script == "enqueue":
                _enqueue(r, sha, batch, c * batch)
            elif script == "claim":
                _claim(r, sha, batch, 1 + c * batch)
            else:
                _finish(r, sha, tuple((f"j{k}", execs[k], "q") for k in range(c * batch, (c + 1) * batch)))
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
        current = {name: r.script_load(_scripts.source(name)) for name in ("enqueue", "claim")}
        cases.extend(
            (
                f"{script} ({batch} job{'s' if batch > 1 else ''})",
                _rq_script(args.rev, script),
                _scripts.source(script),
                worker_round(script, batch, current),
                batch,
            )
            for script in ("enqueue", "claim", "finish")
            for batch in (1, 100)
        )
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
