"""Instructions redis-server executes per job in the worker's scripts: this tree against a git revision.

For each of ``enqueue``, ``claim`` and ``finish`` (batches of 50 jobs, as the worker sends them, on job
hashes shaped like ``TaskQueue.enqueue``'s), runs a redis-server under valgrind's callgrind collecting only
inside ``EVALSHA`` (its Lua and every command its script calls), prepares the data, then counts the
instructions of 4 calls of the script alone. The count does not depend on the machine's load, so a change of
1% shows (``INFO cpu`` swings by 10-25% on a shared host); ~8,800 instructions are ~1 µs here.

    python benchmarks/lua_instr.py [--rev HEAD] [--scripts enqueue,claim,finish]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.append(str(ROOT / "tests"))

from lua_split import STREAM, TS, _rq_script  # noqa: E402

from asyncsched.rq import _scripts  # noqa: E402
from asyncsched.rq._calls import ClaimCall, FinishCall  # noqa: E402
from asyncsched.rq.keys import RQKeys  # noqa: E402
from servers import _wait_port, find_binary, free_port  # noqa: E402

BATCH, CALLS = 50, 4
NAMES = ("enqueue", "claim", "finish")
# the shared fields of a job hash as TaskQueue.enqueue writes them (RQ's to_dict plus ours)
SHARED = ["success_callback_name", "", "failure_callback_name", "", "stopped_callback_name", "",
          "started_at", "", "ended_at", "", "last_heartbeat", "", "worker_name", "", "group_id", "",
          "origin", "q", "timeout", "180", "status", "queued", "asyncsched_function_path", "m:f",
          "asyncsched_attempt", "1"]  # fmt: skip
LIFE = ["kind", "queued", "queue", "q", "attempt", "1", "function", "m:f"]
PACKED_LIFE = ["L", "\x1f".join(["k", "queued", "q", "q", "a", "1", "f", "m:f"])]


def life_of(enqueue_lua: str) -> list[str]:
    """The shared lifecycle fields a revision's enqueue.lua takes: packed since the packed record format."""
    return PACKED_LIFE if "ARGV[life_from + 1]" in enqueue_lua else LIFE


def enqueue(r: redis.Redis, sha: str, n: int, start: int = 0, life: list[str] = PACKED_LIFE) -> None:
    jobs = [
        a for i in range(start, start + n) for a in (f"job-{i:08d}", "x" * 40, "m.f()", TS, "1767225600.0")
    ]
    head = ["q", "queued", "n", "", "0", "0", len(SHARED) // 2, *SHARED, len(life) // 2, *life, n]
    assert r.evalsha(sha, 2, STREAM, "rq:queues", "rq", 10000, *head, *jobs) == [1] * n


def claim(r: redis.Redis, sha: str, n: int, first: int = 1) -> list[tuple[str, str]]:
    call = ClaimCall(RQKeys("rq"), "w1", STREAM, "1767225601.0", TS, 60, n, 10000, "", False, (), ("q",),
                     "0" * 20, first)  # fmt: skip
    out: list[bytes] = r.evalsha(sha, len(call.to_keys()), *call.to_keys(), *call.to_args())  # type: ignore[assignment]
    assert len(out) == 4 * n, out
    return [(j.decode(), e.decode()) for j, e in zip(out[0::4], out[1::4], strict=True)]


def finish(r: redis.Redis, sha: str, jobs: list[tuple[str, str]]) -> None:
    fields = [
        "finished",
        "1",
        "",
        "",
        "",
        "500",
        "1767226000",
        "",
        "",
        "0",
        "1767225601.0",
        "1767225601.1",
        "0.1",
        "success",
        "",
        "",
        "",
        "",
        "1",
        "",
        "",
        "m:f",
        "",
        "",
        "",
        "",
        "",
    ]  # fields 4-30
    records = tuple("\x1e".join([j, e, "q", *fields]) for j, e in jobs)
    execs = tuple((j, e, "q") for j, e in jobs)
    call = FinishCall(RQKeys("rq"), "w1", STREAM, 10000, TS, 1767225601.2, 30, execs, records)
    assert r.evalsha(sha, len(call.to_keys()), *call.to_keys(), *call.to_args()) == [1] * len(jobs)


def _dump(pid: int, name: str) -> None:
    subprocess.run(["callgrind_control", "-d", name, str(pid)], stdout=subprocess.DEVNULL, check=True)


def instructions(sources: dict[str, str], which: str, out_dir: str) -> float:
    """Instructions per job of ``which`` (sources: script name -> text)."""
    port = free_port()
    out = os.path.join(out_dir, f"cg.{port}")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--toggle-collect=evalShaCommand",
           find_binary("redis-server"), "--port", str(port), "--save", "", "--appendonly", "no"]  # fmt: skip
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, srv, "redis-server under valgrind", timeout=120)
        r = redis.Redis(port=port)
        shas = {k: r.script_load(v) for k, v in sources.items()}
        life = life_of(sources["enqueue"])
        r.hset("rq:worker:w1", "state", "idle")
        n = BATCH * CALLS
        if which != "enqueue":
            enqueue(r, shas["enqueue"], n, life=life)
        execs = claim(r, shas["claim"], n) if which == "finish" else []
        _dump(srv.pid, "setup")
        for c in range(CALLS):
            if which == "enqueue":
                enqueue(r, shas["enqueue"], BATCH, n + c * BATCH, life=life)
            elif which == "claim":
                claim(r, shas["claim"], BATCH, 1 + c * BATCH)
            else:
                finish(r, shas["finish"], execs[c * BATCH : (c + 1) * BATCH])
        _dump(srv.pid, "measured")
        text = Path(max(glob.glob(out + "*"), key=os.path.getmtime)).read_text()
        found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        assert "measured" in text
        assert found
        return int(found.group(1)) / n
    finally:
        srv.terminate()
        srv.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="the revision to compare with (default HEAD)")
    parser.add_argument("--scripts", default=",".join(NAMES))
    args = parser.parse_args()
    old = {k: _rq_script(args.rev, k) for k in NAMES}
    new = {k: _scripts.source(k) for k in NAMES}
    with tempfile.TemporaryDirectory() as tmp:
        for which in args.scripts.split(","):
            a, b = instructions(old, which, tmp), instructions(new, which, tmp)
            print(f"{which:8} {args.rev}: {a:9,.0f}   this tree: {b:9,.0f} instr./job   ({(b - a) / a:+.1%})")


if __name__ == "__main__":
    main()
