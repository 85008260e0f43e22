"""Peer benchmarks: asyncsched against rq, arq, saq, streaq and taskiq on the same workloads.

    python benchmarks/run.py [--quick] [--runs N] [--only W2,W3] [--libs rq,asyncsched]
                             [--out DIR] [--no-docs]

Starts its own redis-server on a free loopback port (persistence off), creates the venvs on first use
(``benchmarks/.venv-peers`` for rq, arq, saq and streaq; ``benchmarks/.venv-taskiq`` because taskiq-redis
needs redis-py >= 6 while arq pins redis-py < 6; ``benchmarks/.venv-ours`` with asyncsched installed as a
user installs it, ``pip install -e <checkout>``: its own dependencies only, sources compiled; ``--quick``
runs ours in the current interpreter instead), then runs every (library, workload) cell ``--runs`` times,
interleaved so that a burst of load on the machine hits every library alike. Each cell is one subprocess of
``peers/<lib>_bench.py`` in the library's venv, which prints one JSON result line (see ``_common.py`` for
what is measured and how). Writes ``results/<date>.json`` and ``.md`` and refreshes the generated part of
``docs/performance.md`` (skipped with ``--quick`` or ``--no-docs``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.servers import redis_server  # noqa: E402 - the test rig's redis-server fixture

VENVS: dict[str, list[str]] = {
    # arq pins redis-py < 6; taskiq-redis 1.2 needs redis-py >= 6: two venvs
    "peers": ["rq==3.0.0", "arq==0.28.0", "saq[redis]==0.26.4", "streaq==7.2.0", "hiredis"],
    "taskiq": ["taskiq==0.13.0", "taskiq-redis==1.2.4", "hiredis"],
    # asyncsched as a user installs it: its own dependencies only. The development venv also holds rq, the
    # OpenTelemetry SDK and uvloop, which a worker imports when present (redis-py imports OpenTelemetry):
    # ~5 MB more of RSS than a user's worker, and none of it in any peer's venv.
    "ours": ["-e", ROOT],
}


@dataclass
class Lib:
    name: str
    venv: str | None  # None: the project's own interpreter
    runner: str
    workloads: list[str]
    variant: str = ""
    #: smaller N for a library too slow to drain the full N within the time budget
    n_override: dict[str, int] = field(default_factory=dict)
    #: another checkout whose src/ and benchmarks/peers/ run instead of this one's (``--base``)
    checkout: str | None = None


LIBS: list[Lib] = [
    Lib("asyncsched", "ours", "asyncsched_bench.py", ["W2", "W1bulk", "W3", "W4", "W5", "W6", "W7"]),
    Lib("redis-py", "ours", "redispy_bench.py", ["W5"]),
    # rq's SimpleWorker runs one job at a time (~400 no-op jobs/s, ~75 sleeping jobs/s): smaller N keeps
    # each of its cells near 10 s. rq's W7 (plain def on SimpleWorker) is exactly its W2: one set of runs.
    Lib("rq", "peers", "rq_bench.py", ["W2", "W1bulk", "W3", "W4"], n_override={"W2": 4000, "W3": 750}),
    # arq at its default poll_delay (0.5 s) and at its documented fast setting (0.01 s); the default one
    # drains ~1,000 jobs/s, so 10,000 jobs keep its W2 cell near 10 s.
    Lib("arq", "peers", "arq_bench.py", ["W2", "W3", "W4"], n_override={"W2": 10000}),
    Lib("arq-fast", "peers", "arq_bench.py", ["W2", "W3", "W4"], variant="fast"),
    Lib("saq", "peers", "saq_bench.py", ["W2", "W3", "W4", "W7"]),
    Lib("streaq", "peers", "streaq_bench.py", ["W2", "W1bulk", "W3", "W4"], n_override={"W2": 10000}),
    Lib("taskiq", "taskiq", "taskiq_bench.py", ["W2", "W3", "W4"]),
]
PEERS = ["rq", "arq", "arq-fast", "saq", "streaq", "taskiq"]
BASE = "asyncsched@base"  # --base DIR: an older checkout of ours, in the same run, for a before/after ratio

SIZES = {
    "full": {"W2": 20000, "W1bulk": 20000, "W3": 5000, "W4": 2000, "W5": 10000, "W6": 10000, "W7": 20000},
    "quick": {"W2": 1000, "W1bulk": 1000, "W3": 300, "W4": 100, "W5": 1000, "W6": 500, "W7": 1000},
}
QUICK_SCALE = 0.2  # quick mode shrinks per-library overrides too


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- venvs
def venv_python(name: str | None) -> str:
    if name is None:
        return sys.executable
    return os.path.join(HERE, f".venv-{name}", "bin", "python")


def ensure_venv(name: str) -> None:
    path = os.path.join(HERE, f".venv-{name}")
    stamp = os.path.join(path, "bench-requirements.txt")
    wanted = "\n".join([*VENVS[name], "psutil"]) + "\n"
    if os.path.exists(stamp):
        with open(stamp) as fh:
            if fh.read() == wanted:
                return
    log(f"creating {path} with {' '.join(VENVS[name])}")
    if not os.path.exists(os.path.join(path, "bin", "python")):
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
    subprocess.run(
        [os.path.join(path, "bin", "python"), "-m", "pip", "install", "-q", *VENVS[name], "psutil"],
        check=True,
    )
    with open(stamp, "w") as fh:
        fh.write(wanted)


# ---------------------------------------------------------------------------------------------- machine
def _sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(redis_version: str) -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    model = ""
    for line in _sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version,
    }


# ---------------------------------------------------------------------------------------------- cells
def run_cell(lib: Lib, workload: str, n: int, url: str) -> dict[str, Any]:
    bench_dir = os.path.join(lib.checkout, "benchmarks") if lib.checkout else HERE
    env = dict(os.environ)
    if lib.checkout:
        env["PYTHONPATH"] = os.path.join(lib.checkout, "src")
    cmd = [
        venv_python(lib.venv),
        os.path.join(bench_dir, "peers", lib.runner),
        workload,
        "--redis",
        url,
        "-n",
        str(n),
    ]
    if lib.variant:
        cmd += ["--variant", lib.variant]
    load_before = os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=bench_dir, env=env)
    except subprocess.TimeoutExpired:
        return {"valid": False, "error": "cell timed out after 600 s", "lib": lib.name, "workload": workload}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            res: dict[str, Any] = json.loads(line[len("BENCH-RESULT ") :])
            break
    else:
        res = {"valid": False, "error": f"runner exited {proc.returncode}: {proc.stderr[-2000:]}"}
    res["lib"] = lib.name
    res["workload"] = workload
    res["load1_before"] = load_before
    return res


# metric name -> (workload it comes from, key in the run result, unit, higher is better)
METRICS: dict[str, tuple[str, str, str, bool]] = {
    "W1 single enqueue": ("W2", "enqueue_jobs_per_s", "jobs/s", True),
    "W1 bulk enqueue": ("W1bulk", "bulk_jobs_per_s", "jobs/s", True),
    "W2 no-op drain": ("W2", "drain_jobs_per_s", "jobs/s", True),
    "W3 io-bound drain": ("W3", "drain_jobs_per_s", "jobs/s", True),
    "W4 p50 enqueue→start": ("W4", "p50_ms", "ms", False),
    "W4 p95 enqueue→start": ("W4", "p95_ms", "ms", False),
    "W4 p99 enqueue→start": ("W4", "p99_ms", "ms", False),
    "W4 max enqueue→start": ("W4", "max_ms", "ms", False),
    "W7 sync no-op drain": ("W7", "drain_jobs_per_s", "jobs/s", True),
    "Redis cmds/job, enqueue": ("W2", "enqueue_cmds_per_job", "cmds", False),
    "Redis cmds/job, worker": ("W2", "worker_cmds_per_job", "cmds", False),
    "Redis CPU/job, enqueue": ("W2", "enqueue_redis_cpu_us_per_job", "µs", False),
    "Redis CPU/job, worker": ("W2", "worker_redis_cpu_us_per_job", "µs", False),
    "worker peak RSS (W2)": ("W2", "peak_rss_mb", "MB", False),
    "worker idle RSS (W4)": ("W4", "idle_rss_mb", "MB", False),
    "W5 publish→callback, awaited": ("W5", "awaited_msgs_per_s", "msgs/s", True),
    "W5 publish→callback, 100 in flight": ("W5", "inflight_msgs_per_s", "msgs/s", True),
    "W5 publish→callback, pipelined": ("W5", "pipelined_msgs_per_s", "msgs/s", True),
    "W5 p99 latency, awaited": ("W5", "awaited_p99_ms", "ms", False),
    "W6 dispatch lag p50": ("W6", "lag_p50_ms", "ms", False),
    "W6 dispatch lag p99": ("W6", "lag_p99_ms", "ms", False),
    "W6 idle scheduler CPU": ("W6", "idle_cpu_percent", "% of a core", False),
    "W6 scheduler peak RSS": ("W6", "peak_rss_mb", "MB", False),
    "W6 register the schedules (API)": ("W6", "register_s", "s", False),
}


def aggregate(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """metric -> lib -> {median, min, max, runs, valid}."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for metric, (workload, key, _unit, _hib) in METRICS.items():
        row: dict[str, dict[str, Any]] = {}
        for lib, per_wl in results.items():
            src = workload
            if lib == "rq" and workload == "W7":
                src = "W2"  # same function kind, same worker
            runs = per_wl.get(src, [])
            if not runs:
                continue
            vals = [r[key] for r in runs if r.get("valid") and isinstance(r.get(key), int | float)]
            invalid = sum(1 for r in runs if not r.get("valid"))
            if not vals and not invalid:
                continue
            cell: dict[str, Any] = {"runs": len(runs), "invalid": invalid}
            seen = [r[key] for r in runs if isinstance(r.get(key), int | float)]
            if seen:
                cell["all_median"] = statistics.median(seen)
            if vals:
                cell.update(median=statistics.median(vals), min=min(vals), max=max(vals))
            row[lib] = cell
        if row:
            table[metric] = row
    return table


def best_peer(row: dict[str, dict[str, Any]], higher: bool) -> tuple[str, float] | None:
    cands = [
        (lib, c["median"]) for lib, c in row.items() if lib in PEERS and "median" in c and not c["invalid"]
    ]
    if not cands:
        return None
    return max(cands, key=lambda x: x[1]) if higher else min(cands, key=lambda x: x[1])


def targets(table: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The issue's targets, each with measured value, threshold and verdict (None: not measured)."""

    def ours(metric: str) -> float | None:
        c = table.get(metric, {}).get("asyncsched")
        return c["median"] if c and "median" in c and not c["invalid"] else None

    out: list[dict[str, Any]] = []

    def ratio_target(name: str, metric: str, factor: float) -> None:
        row = table.get(metric, {})
        bp = best_peer(row, True)
        v = ours(metric)
        t: dict[str, Any] = {"target": name, "metric": metric, "ours": v}
        if bp and v is not None:
            t.update(best_peer=bp[0], peer_value=bp[1], ratio=v / bp[1], met=v >= factor * bp[1])
        else:
            t["met"] = None
        out.append(t)

    ratio_target("W2 no-op drain ≥ 2x best peer", "W2 no-op drain", 2)
    ratio_target("W3 io-bound drain ≥ 2x best peer", "W3 io-bound drain", 2)
    ratio_target("W1 single enqueue ≥ 2x best peer", "W1 single enqueue", 2)
    v = ours("W1 bulk enqueue")
    out.append(
        {
            "target": "W1 bulk enqueue ≥ 50,000 jobs/s",
            "metric": "W1 bulk enqueue",
            "ours": v,
            "met": None if v is None else v >= 50000,
        }
    )
    row = table.get("W4 p99 enqueue→start", {})
    bp = best_peer(row, False)
    v = ours("W4 p99 enqueue→start")
    t: dict[str, Any] = {"target": "W4 p99 ≤ best peer's", "metric": "W4 p99 enqueue→start", "ours": v}
    if bp and v is not None:
        t.update(best_peer=bp[0], peer_value=bp[1], ratio=v / bp[1], met=v <= bp[1])
    else:
        t["met"] = None
    out.append(t)
    for mode in ("awaited", "100 in flight", "pipelined"):
        metric = f"W5 publish→callback, {mode}"
        v = ours(metric)
        raw = table.get(metric, {}).get("redis-py", {}).get("median")
        t = {"target": f"W5 ({mode}) ≥ 80% of raw redis-py pub/sub", "metric": metric, "ours": v}
        if v is not None and raw:
            t.update(best_peer="redis-py", peer_value=raw, ratio=v / raw, met=v >= 0.8 * raw)
        else:
            t["met"] = None
        out.append(t)
    v = ours("W7 sync no-op drain")
    rq = table.get("W7 sync no-op drain", {}).get("rq", {}).get("median")
    t = {"target": "W7 sync no-op drain ≥ 10x rq SimpleWorker", "metric": "W7 sync no-op drain", "ours": v}
    if v is not None and rq:
        t.update(best_peer="rq", peer_value=rq, ratio=v / rq, met=v >= 10 * rq)
    else:
        t["met"] = None
    out.append(t)
    row = table.get("worker idle RSS (W4)", {})
    bp = best_peer(row, False)
    v = ours("worker idle RSS (W4)")
    t = {"target": "idle worker RSS ≤ leanest peer + 10 MB", "metric": "worker idle RSS (W4)", "ours": v}
    if bp and v is not None:
        t.update(best_peer=bp[0], peer_value=bp[1], ratio=v / bp[1], met=v <= bp[1] + 10)
    else:
        t["met"] = None
    out.append(t)
    return out


# ---------------------------------------------------------------------------------------------- report
def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _cell(c: dict[str, Any] | None) -> str:
    if not c:
        return "—"
    if c["invalid"]:
        seen = f" {_fmt(c['all_median'])}" if c.get("all_median") is not None else ""
        return f"INVALID{seen} ({c['invalid']}/{c['runs']} runs failed the check)"
    return f"{_fmt(c['median'])} ({_fmt(c['min'])}-{_fmt(c['max'])})"


def render_base_comparison(table: dict[str, dict[str, dict[str, Any]]], base: str) -> str:
    """This checkout against ``--base`` per row: the ratio of medians, > 1 meaning this one is better."""
    lines = [
        "",
        f"### This checkout against {base}",
        "",
        "| metric | unit | this | base | this vs base (> 1: better) |",
        "|---|---|---|---|---|",
    ]
    for metric, row in table.items():
        _wl, _key, unit, higher = METRICS[metric]
        this, before = row.get("asyncsched"), row.get(BASE)
        ratio = "—"
        if this and before and this.get("median") and before.get("median"):
            r = this["median"] / before["median"] if higher else before["median"] / this["median"]
            ratio = f"{r:.3f}x"
        lines.append(f"| {metric} | {unit} | {_cell(this)} | {_cell(before)} | {ratio} |")
    return "\n".join(lines) + "\n"


def render_markdown(doc: dict[str, Any]) -> str:
    table = doc["table"]
    libs = [
        lib for lib in ["asyncsched", BASE, *PEERS, "redis-py"] if any(lib in row for row in table.values())
    ]
    m = doc["machine"]
    quick = " (QUICK: small N)" if doc["quick"] else ""
    lines = [
        f"Run of {doc['started']} UTC, {doc['runs']} run(s) per cell{quick}; "
        "cells show the median (min-max). **Ratio** is asyncsched's median over the best peer's median in "
        "that row (for lower-is-better rows: the peer's over ours, so > 1 always means asyncsched is ahead).",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, "
        f"Linux {m['kernel']}, Python {m['python']}, Redis {m['redis']} on "
        f"loopback (persistence off). Load average (1 min) before the run {doc['load_before']:.2f}, after "
        f"{doc['load_after']:.2f}; median before each cell {doc['load_cell_median']:.2f}.",
        "",
        "| metric | unit | " + " | ".join(libs) + " | ratio vs best peer |",
        "|---|---|" + "---|" * len(libs) + "---|",
    ]
    for metric, row in table.items():
        _wl, _key, unit, higher = METRICS[metric]
        bp = best_peer(row, higher)
        ours = row.get("asyncsched")
        ratio = "—"
        if bp and ours and "median" in ours and not ours["invalid"] and bp[1] and ours["median"]:
            r = ours["median"] / bp[1] if higher else bp[1] / ours["median"]
            ratio = f"{r:.2f}x ({bp[0]})"
        elif metric.startswith("W5") and ours and "median" in ours and "redis-py" in row:
            raw = row["redis-py"].get("median")
            if raw:
                ratio = (
                    f"{ours['median'] / raw:.0%} of redis-py" if higher else f"{raw / ours['median']:.2f}x"
                )
        lines.append(
            f"| {metric} | {unit} | " + " | ".join(_cell(row.get(lib)) for lib in libs) + f" | {ratio} |"
        )
    lines += ["", "### Targets", "", "| target | asyncsched | reference | verdict |", "|---|---|---|---|"]
    for t in doc["targets"]:
        ref = f"{t['best_peer']}: {_fmt(t['peer_value'])}" if "best_peer" in t else "—"
        verdict = {True: "**met**", False: "**MISSED**", None: "not measured"}[t["met"]]
        if "ratio" in t and t["met"] is not None:
            verdict += f" (x{t['ratio']:.2f})"
        lines.append(f"| {t['target']} | {_fmt(t['ours'])} | {ref} | {verdict} |")
    lines += ["", "### Sizes and versions", ""]
    for lib, per_wl in doc["results"].items():
        parts = []
        for wl, runs in per_wl.items():
            if runs:
                parts.append(f"{wl} N={runs[0].get('n', '?')}")
        version = next((r.get("version") for runs in per_wl.values() for r in runs if r.get("version")), "?")
        lines.append(f"- **{lib}** {version}: " + ", ".join(parts))
    invalid = [
        (lib, wl, r.get("error", ""))
        for lib, per in doc["results"].items()
        for wl, runs in per.items()
        for r in runs
        if not r.get("valid")
    ]
    if invalid:
        lines += ["", "### Invalid runs", ""]
        for lib, wl, err in invalid:
            first = (err or "correctness check failed").strip().splitlines()[0][:200]
            lines.append(f"- {lib} {wl}: {first}")
    return "\n".join(lines) + "\n"


DOC_BEGIN = "<!-- bench:begin (generated by benchmarks/run.py; edit outside these markers) -->"
DOC_END = "<!-- bench:end -->"


def update_docs(md: str) -> None:
    path = os.path.join(ROOT, "docs", "performance.md")
    text = f"# Performance\n\n{DOC_BEGIN}\n{DOC_END}\n"
    if os.path.exists(path):
        with open(path) as fh:
            text = fh.read()
    if DOC_BEGIN not in text:
        text += f"\n{DOC_BEGIN}\n{DOC_END}\n"
    head, rest = text.split(DOC_BEGIN, 1)
    _old, tail = rest.split(DOC_END, 1)
    with open(path, "w") as fh:
        fh.write(f"{head}{DOC_BEGIN}\n{md}{DOC_END}{tail}")


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small N, 1 run: a smoke test")
    parser.add_argument("--runs", type=int, default=None, help="runs per cell (default 3, quick 1)")
    parser.add_argument("--only", default="", help="workloads, e.g. W1,W2 (W1 = single enqueue + bulk)")
    parser.add_argument("--libs", default="", help="libraries, e.g. asyncsched,saq")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="directory for <date>.json/.md")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    parser.add_argument(
        "--base",
        help="another checkout of asyncsched (e.g. a git worktree of an older commit): its cells run beside "
        "this checkout's in the same run, and a before/after table is added",
    )
    opts = parser.parse_args()
    if opts.base:
        ours = next(lib for lib in LIBS if lib.name == "asyncsched")
        LIBS.insert(1, Lib(BASE, "ours", ours.runner, ours.workloads, checkout=os.path.abspath(opts.base)))
    runs = opts.runs or (1 if opts.quick else 3)
    sizes = SIZES["quick" if opts.quick else "full"]

    only: set[str] = set()
    for w in filter(None, opts.only.split(",")):
        only |= {"W2", "W1bulk"} if w == "W1" else {w}
    wanted_libs = set(filter(None, opts.libs.split(",")))
    cells: list[tuple[Lib, str, int]] = []
    for lib in LIBS:
        if (
            wanted_libs
            and lib.name not in wanted_libs
            and not (lib.name == BASE and "asyncsched" in wanted_libs)
        ):
            continue
        for wl in lib.workloads:
            if only and wl not in only:
                continue
            n = lib.n_override.get(wl, sizes[wl])
            if opts.quick and wl in lib.n_override:
                n = max(50, int(min(n, sizes[wl]) * QUICK_SCALE))
            cells.append((lib, wl, n))
    if not cells:
        parser.error("nothing to run for that --only/--libs")
    if opts.quick:  # a smoke test: ours in this interpreter, no venv to build
        cells = [(replace(lib, venv=None) if lib.venv == "ours" else lib, wl, n) for lib, wl, n in cells]
    for venv in sorted({lib.venv for lib, _, _ in cells if lib.venv}):
        ensure_venv(venv)
    # our sources compiled as a (non-editable) pip install compiles them: with PYTHONDONTWRITEBYTECODE set,
    # a process would otherwise compile every module it imports at start-up (time and memory)
    for tree in sorted({lib.checkout or ROOT for lib, _, _ in cells if lib.venv == "ours"}):
        subprocess.run([venv_python("ours"), "-m", "compileall", "-q", os.path.join(tree, "src")], check=True)

    started = dt.datetime.now(dt.UTC)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    load_cells: list[float] = []
    load_before = os.getloadavg()[0]
    with redis_server() as server:
        import redis

        client = redis.Redis.from_url(server.url)
        redis_version = str(client.info("server")["redis_version"])
        client.close()
        log(f"redis-server {redis_version} on {server.url}; {len(cells)} cells x {runs} runs")
        for run in range(runs):
            for lib, wl, n in cells:
                t0 = time.time()
                res = run_cell(lib, wl, n, server.url)
                load_cells.append(res["load1_before"])
                results.setdefault(lib.name, {}).setdefault(wl, []).append(res)
                status = "ok" if res.get("valid") else "INVALID " + str(res.get("error", ""))[:300]
                log(f"run {run + 1}/{runs} {lib.name:<10} {wl:<6} N={n:<6} {time.time() - t0:5.1f}s {status}")
    finished = dt.datetime.now(dt.UTC)
    table = aggregate(results)
    doc: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "finished": finished.strftime("%Y-%m-%d %H:%M"),
        "duration_s": (finished - started).total_seconds(),
        "quick": opts.quick,
        "runs": runs,
        "machine": machine(redis_version),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "load_cell_median": statistics.median(load_cells) if load_cells else 0.0,
        "argv": sys.argv[1:],
        "table": table,
        "targets": targets(table),
        "results": results,
    }
    md = render_markdown(doc)
    if opts.base:
        md += render_base_comparison(table, opts.base)
    os.makedirs(opts.out, exist_ok=True)
    stem = started.strftime("%Y-%m-%d") + ("-quick" if opts.quick else "")
    if only or wanted_libs:  # a partial run never replaces the day's full comparison
        stem += "-" + "-".join(sorted(only) or ["all"]) + "-" + "-".join(sorted(wanted_libs) or ["all"])
    if opts.base:  # a before/after run never replaces the day's peer comparison either
        stem += "-vs-base"
    with open(os.path.join(opts.out, stem + ".json"), "w") as fh:
        json.dump(doc, fh, indent=1, default=str)
    with open(os.path.join(opts.out, stem + ".md"), "w") as fh:
        fh.write(f"# Benchmark results {doc['started']} UTC\n\n{md}")
    if not opts.quick and not opts.no_docs and not (only or wanted_libs or opts.base):
        update_docs(md)
    print(md)
    log(f"done in {doc['duration_s']:.0f}s; wrote {os.path.join(opts.out, stem)}.{{json,md}}")
    return 0 if all(r.get("valid") for per in results.values() for rs in per.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
