"""Mutation testing, curated: put one known bug at a time into a copy of ``src/`` and check a test catches it.

Each mutant is an exact text edit of one file (Python or Lua) and the tests that must fail with it. The
edit is made in a temporary copy of ``src/`` (the work tree is never touched) and the tests run with that
copy first on ``PYTHONPATH``, so subprocesses the tests spawn run the mutant too. An edit whose text is no
longer in its file is reported STALE (the list must follow the code, not rot silently).

    python scripts/mutants.py              # every mutant (26 minutes on a loaded 2-core machine)
    python scripts/mutants.py --fast       # the bugs of issue 21's table, real Redis only (10-13 minutes)
    python scripts/mutants.py --only sched-claim-compare,retry-cap
    python scripts/mutants.py --list
    python scripts/mutants.py --check      # each mutant still applies (seconds; for CI on every change)

Exit status 1 when a critical mutant survives, a mutant is stale, or the unmutated tests fail. Survivors
that are not critical are reported, not fatal. ``nox -s mutants`` runs this.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "src/asyncsched"
REAL_REDIS_SQLITE = ["-k", "redis-sqlite or sqlite-redis"]  # (test ids order the params either way)
REAL_REDIS = ["-k", "redis and not memory"]


@dataclasses.dataclass(frozen=True)
class Mutant:
    id: str
    path: str  # relative to src/asyncsched
    old: str
    new: str
    tests: tuple[str, ...]
    why: str
    critical: bool = True
    fast: bool = False  # in the quick subset (the bugs of issue 21's table)


def m(id: str, path: str, old: str, new: str, tests: list[str], why: str, **kw: bool) -> Mutant:
    return Mutant(id, path, old, new, tuple(tests), why, **kw)


MUTANTS: list[Mutant] = [
    # --- scheduler: claims and leases --------------------------------------------------------------
    m(
        "sched-claim-compare",
        "scheduler/lua/claim.lua",
        "if not current or tonumber(current) ~= tonumber(ARGV[2]) then\n  return {0}\nend\n",
        "if not current then\n  return {0}\nend\n",
        ["tests/scheduler/test_leases.py", "tests/scheduler/test_firing.py", *REAL_REDIS_SQLITE],
        "any replica claims a due tick: ticks fire twice",
        fast=True,
    ),
    m(
        "sched-claim-signature",
        "scheduler/lua/claim.lua",
        "if ARGV[6] ~= '' and redis.call('HGET', KEYS[4], task) ~= ARGV[6] then\n  return {-1}\nend\n",
        "",
        ["tests/scheduler/test_firing.py", "tests/scheduler/test_api.py", *REAL_REDIS_SQLITE],
        "a replica with a stale copy of an edited schedule fires by the old one",
    ),
    m(
        "sched-relet-compare",
        "scheduler/lua/relet.lua",
        "if not deadline or tonumber(deadline) > tonumber(ARGV[2]) then",
        "if not deadline then",
        ["tests/scheduler/test_leases.py", *REAL_REDIS_SQLITE],
        "a replica takes over a lease that is still held: the tick is enqueued twice",
        fast=True,
    ),
    m(
        "sched-recover-deleted",
        "scheduler/_recovery.py",
        "            if entry is None:\n                await self.index.done(task_id, tick_ms)\n",
        "            if entry is None:\n",
        ["tests/scheduler/test_leases.py", *REAL_REDIS_SQLITE],
        "the lease of a deleted task's claimed tick is never released",
    ),
    # --- worker: claims, leases, reaping -----------------------------------------------------------
    m(
        "worker-reap-lease",
        "rq/scripts/reap.lua",
        "redis.call('ZRANGEBYSCORE', wk, 0, now)",
        "redis.call('ZRANGEBYSCORE', wk, 0, '+inf')",
        ["tests/worker/test_leases.py", *REAL_REDIS],
        "the reaper takes live workers' jobs, whatever their lease",
        fast=True,
    ),
    m(
        "worker-claim-lease",
        "rq/scripts/claim.lua",
        "wip_score = tostring(math.floor(now) + lease + 60), tostring(math.floor(now) + lease)",
        "wip_score = tostring(math.floor(now) + lease + 60), tostring(math.floor(now))",
        ["tests/worker/test_leases.py", *REAL_REDIS],
        "a claimed job starts with a lapsed lease (any reaper takes it)",
    ),
    m(
        "worker-claim-started-twice",
        "rq/scripts/claim.lua",
        "status == 'canceled' or status == 'started' or status == 'finished' then",
        "status == 'canceled' then",
        ["tests/worker/test_leases.py", "tests/worker/test_worker.py", *REAL_REDIS],
        "a job id queued twice is started twice",
    ),
    m(
        "worker-heartbeat-renew",
        "rq/scripts/heartbeat.lua",
        "    if not wrong_type(wk, 'zset') then redis.call('ZADD', wk, now + lease, member) end\n",
        "",
        ["tests/worker/test_leases.py", *REAL_REDIS],
        "heartbeats do not renew leases: long jobs are reaped while running",
    ),
    m(
        "worker-heartbeat-owner",
        "rq/scripts/heartbeat.lua",
        "if cur[1] == 'started' and cur[2] == w then",
        "if cur[1] ~= nil then",
        ["tests/worker/test_leases.py", "tests/worker/test_worker.py", *REAL_REDIS],
        "a worker renews (and keeps running) a job that was reaped or cancelled",
    ),
    m(
        "control-stop-execution",
        "worker/_commands.py",
        'if job.execution_id == payload["execution_id"]:',
        "if True:",
        ["tests/worker/test_rq_interop.py", "-k", "commands"],
        "RQ's stop-execution command stops every running job, not the one execution",
        critical=False,
    ),
    m(
        "control-kill-horse",
        "worker/_commands.py",
        '        elif command == "kill-horse":\n',
        '        elif command == "kill-horse-disabled":\n',
        ["tests/worker/test_rq_interop.py", "-k", "commands"],
        "RQ's kill-horse command is ignored",
        critical=False,
    ),
    m(
        "record-gives-up-when-down",
        "worker/_finish.py",
        "                self.outage.failed(exc)  # the outcomes are kept and recorded when Redis is back\n",
        "                return\n",
        ["tests/worker/test_leases.py", *REAL_REDIS],
        "outcomes finished while Redis is down are dropped (jobs stay started until reaped)",
        critical=False,
    ),
    # --- retries -------------------------------------------------------------------------------------
    m(
        "retry-intervals",
        "queue/_models.py",
        "return intervals[max(len(intervals) - retries_left, 0)]",
        "return intervals[0]",
        ["tests/worker/test_leases.py", *REAL_REDIS],
        "every retry waits the first interval",
        fast=True,
    ),
    m(
        "retry-cap",
        "worker/_job.py",
        "    if not raw:\n"
        "        return retry_interval(parse_intervals(h.get(_RETRY_INTERVALS)), retries_left)\n",
        "    if not raw:\n"
        "        return min(retry_interval(parse_intervals(h.get(_RETRY_INTERVALS)), retries_left), 1)\n",
        ["tests/worker/test_leases.py", *REAL_REDIS],
        "retry delays capped at 1 s",
        fast=True,
    ),
    m(
        "retry-count",
        "worker/_job.py",
        "retries_left=retries_left - 1,",
        "retries_left=retries_left,",
        ["tests/worker/test_leases.py", "tests/worker/test_worker.py", *REAL_REDIS],
        "retries never run out",
    ),
    m(
        "promote-due",
        "rq/scripts/promote.lua",
        "    elseif at_ms > a.now * 1000 then\n",
        "    elseif false then\n",
        [
            "tests/worker/test_exact_delay.py",
            "tests/worker/test_leases.py",
            "tests/worker/test_worker.py",
            *REAL_REDIS,
        ],
        "scheduled jobs and retries run before they are due",
    ),
    # --- trust: the allow-list and pickle ------------------------------------------------------------
    m(
        "allowlist-api-source",
        "web/_base.py",
        "await tasks.functions(exclude_source=API_SOURCE)",
        'await tasks.functions(exclude_source="(none)")',
        ["tests/web/test_mount.py", "-k", "allow or vouches"],
        "tasks created through the API vouch for their own functions when no allow-list is set",
        fast=True,
    ),
    m(
        "allowlist-prefix",
        "queue/_functions.py",
        'if ref.module == prefix or ref.module.startswith(prefix + "."):',
        "if ref.module.startswith(prefix):",
        ["tests/web/test_validation.py"],
        "allow-list entry app.services also allows app.servicesx",
    ),
    m(
        "pickle-refused",
        "rq/serializers.py",
        "        if not accept_pickle:\n",
        "        if False:\n",
        ["tests/queue/test_codec.py", "tests/worker/test_worker.py", "-k", "pickle"],
        "pickled payloads are loaded without ASYNCSCHED_ACCEPT_PICKLE",
    ),
    # --- the RQ wire format --------------------------------------------------------------------------
    m(
        "wire-result-type",
        "rq/codec.py",
        "    SUCCESSFUL = 1\n",
        "    SUCCESSFUL = 4\n",
        ["tests/worker/test_rq_interop.py", "tests/queue/test_rq_reads_ours.py", *REAL_REDIS],
        "results written with RQ's 'retried' type instead of 'successful'",
    ),
    m(
        "wire-timestamp",
        "rq/codec.py",
        '_TS = "%Y-%m-%dT%H:%M:%S.%fZ"',
        '_TS = "%Y-%m-%dT%H:%M:%S.%f"',
        ["tests/queue/test_rq_reads_ours.py", "tests/queue/test_codec.py"],
        "job hash timestamps without RQ's trailing Z",
    ),
    m(
        "wire-queues-set",
        "rq/scripts/enqueue.lua",
        "    redis.call('SADD', queues_key, qkey)\n",
        "",
        ["tests/worker/test_rq_interop.py", "tests/queue/test_rq_reads_ours.py", *REAL_REDIS],
        "queues missing from RQ's set of queues (rq info, Queue.all, rq-dashboard do not see them)",
    ),
    m(
        "wire-job-field",
        "rq/scripts/enqueue.lua",
        # the plain queued job's HSET, without a template (write_job; a run of 8 or more: the next mutant)
        "  redis.call('HSET', jk, 'data', data, 'created_at', ts, 'description', desc, 'enqueued_at', ts,\n",
        "  redis.call('HSET', jk, 'data', data, 'created_at', ts, 'desc', desc, 'enqueued_at', ts,\n",
        ["tests/queue/test_rq_reads_ours.py", "tests/worker/test_rq_interop.py", *REAL_REDIS],
        "a job hash field under a name RQ does not read",
    ),
    m(
        "wire-template-field",
        "rq/scripts/enqueue.lua",
        "redis.call('HSET', jk, 'data', data, 'created_at', ts, 'description', desc, 'enqueued_at', ts)\n",
        "redis.call('HSET', jk, 'data', data, 'created_at', ts, 'desc', desc, 'enqueued_at', ts)\n",
        ["tests/queue/test_enqueue_template.py", *REAL_REDIS],
        "a run of like jobs (the template's COPY) gets a hash the one-job path does not write",
    ),
    # --- Redis Cluster -------------------------------------------------------------------------------
    m(
        "cluster-wipe-one-node",
        "store/_redis_wipe.py",
        'info = await self._ask(master.node, "INFO", "server")',
        'info = await self.redis.info("server")',
        ["tests/chaos/test_cluster_failover.py", "-k", "wiped"],
        "a cluster's run id read from whichever node answers: a wipe of another master is missed",
    ),
    m(
        "cluster-wipe-client-slots",
        "store/_redis_wipe.py",
        "client.keyslot(m) in master.slots]",
        "client.get_node_from_key(m).name == master.name]",
        ["tests/chaos/test_cluster_failover.py", "-k", "half_updated"],
        "a master's slots from the client's table (patched one slot per MOVED): a failover goes unjudged",
    ),
    m(
        "cluster-wipe-stale-master",
        "store/_redis_wipe.py",
        "if not any(o.epoch > m.epoch and _overlap(",
        "if not any(o.epoch < -1 and _overlap(",
        ["tests/store/test_redis_wipes.py"],
        "a demoted master that says it still serves its slots is checked: its empty restart taken for a wipe",
    ),
    m(
        "cluster-workers-unfolded",
        "queue/_reading.py",
        "        if self.keys.cluster:\n            rows = await fold_aliases(self._r, self.keys, rows)\n",
        "",
        ["tests/worker/test_worker.py", "-k", "cluster and (registration or multi_queue)"],
        "a cluster worker listed idle, with no current job, its queues tagged and its job counts zero",
    ),
]


def _select(args: argparse.Namespace) -> list[Mutant]:
    chosen = MUTANTS
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {x.id for x in MUTANTS}
        if unknown:
            sys.exit(f"unknown mutant(s): {', '.join(sorted(unknown))}; see --list")
        chosen = [x for x in chosen if x.id in wanted]
    if args.fast:
        chosen = [x for x in chosen if x.fast]
    if args.critical:
        chosen = [x for x in chosen if x.critical]
    return chosen


def _pytest(tests: tuple[str, ...], src: Path, timeout: float) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return -1, out + "\n(timed out)", time.monotonic() - started
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def _first_failure(output: str) -> str:
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return found.group(1) if found else output.strip().splitlines()[-1] if output.strip() else ""


def _run_one(mutant: Mutant, timeout: float) -> dict[str, object]:
    target = ROOT / PKG / mutant.path
    text = target.read_text(encoding="utf-8")
    count = text.count(mutant.old)
    if count != 1:
        return {"result": "STALE", "detail": f"text to mutate found {count} times in {PKG}/{mutant.path}"}
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.id}-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
        (src / "asyncsched" / mutant.path).write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")
        code, output, seconds = _pytest(mutant.tests, src, timeout)
    if code in (1, -1):
        result = "KILLED"
    elif code == 0:
        result = "SURVIVED"
    else:
        result = "ERROR"  # no tests collected, a usage error: the mutant's test selection is wrong
    return {"result": result, "seconds": round(seconds, 1), "detail": _first_failure(output) if code else ""}


def _baseline(mutants: list[Mutant], timeout: float) -> bool:
    """The unmutated tests of each distinct selection must pass, or a kill proves nothing."""
    ok = True
    for tests in dict.fromkeys(x.tests for x in mutants):
        code, output, seconds = _pytest(tests, ROOT / "src", timeout)
        print(f"baseline {' '.join(tests)}: {'ok' if code == 0 else 'FAILED'} ({seconds:.0f}s)", flush=True)
        if code != 0:
            print(output[-3000:])
            ok = False
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated mutant ids")
    parser.add_argument("--fast", action="store_true", help="only the quick subset (issue 21's table)")
    parser.add_argument("--critical", action="store_true", help="only the critical mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument(
        "--check", action="store_true", help="only check each mutant's text is in its file once (seconds)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per test run (default 900)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    chosen = _select(args)
    if args.list:
        for x in chosen:
            flags = ("critical " if x.critical else "") + ("fast" if x.fast else "")
            print(f"{x.id:28} {x.path:28} {flags:14} {x.why}")
        return 0
    if args.check:
        stale = [x.id for x in chosen if (ROOT / PKG / x.path).read_text(encoding="utf-8").count(x.old) != 1]
        print(f"{len(chosen) - len(stale)}/{len(chosen)} mutants apply; stale: {', '.join(stale) or 'none'}")
        return 1 if stale else 0
    if not args.no_baseline and not _baseline(chosen, args.timeout):
        print("the unmutated tests fail: fix them first")
        return 1
    results: dict[str, dict[str, object]] = {}
    for x in chosen:
        results[x.id] = outcome = _run_one(x, args.timeout)
        seconds = outcome.get("seconds", 0)
        print(f"{outcome['result']:8} {x.id:28} {seconds:>6}s  {outcome['detail']}", flush=True)
    survived = [k for k, v in results.items() if v["result"] == "SURVIVED"]
    bad = [
        x.id
        for x in chosen
        if results[x.id]["result"] in ("STALE", "ERROR") or (x.critical and x.id in survived)
    ]
    killed = sum(v["result"] == "KILLED" for v in results.values())
    print(f"\n{killed}/{len(chosen)} killed; survived: {', '.join(survived) or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if bad:
        print(f"FAIL: {', '.join(bad)} (critical survivors, stale or broken mutants)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
