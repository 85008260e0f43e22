"""W6 at 100,000 schedules: three scheduler replicas on one Redis, 1,000 ticks/s, exactly once.

* **register**: 100,000 interval tasks of ``100 seconds`` through the bulk path (``TaskScheduler.add_tasks``)
  into a SQLite database (timed: ``validate_s`` for ``build_task``, ``store_s`` for ``add_tasks``).
  ``--spread ms`` (default) anchors task k at epoch + k ms, so one tick falls due every millisecond (1,000
  ticks/s, as schedules registered at different times are); ``--spread s`` anchors task k at epoch +
  (k mod 100) s, so 1,000 ticks fall due together at each whole second (the burst case).
* **dispatch**: ``--replicas`` (default 3) scheduler processes run the same database; after a warm-up every
  claimed tick of the ``--measure`` window is checked: claimed once (the claimed-ticks stream), enqueued
  (its job exists; the job id is unique by construction), none missing. Lag = the job's ``enqueued_at`` -
  its tick (ms). The run is **INVALID** on any duplicate or missing tick.
* **memory**: peak RSS (``VmHWM``) of the largest replica; **CPU**: the replicas' CPU seconds per second of
  the window (meaningful on a loaded machine, where wall time is not).
* **idle**: one replica over the same 100,000 schedules with nothing due (all ticks moved a week ahead in
  the index): CPU % of a core over ``--idle`` seconds.

    PYTHONPATH=src python benchmarks/w6_100k.py [--n 100000] [--replicas 3] [--spread ms|s]

With ``BENCH_CACHE_DIR`` set, the registered database is kept there and later runs copy it (registration
is then not measured again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from _common import Monitor, percentile, stop_worker  # noqa: E402
from w6_scheduler import _fired_key, _parse_ts, _spawn, _wait_running, check_ticks  # noqa: E402

INTERVAL_S = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _anchor(k: int, n: int, spread: str) -> datetime:
    if spread == "s":
        return _EPOCH + timedelta(seconds=k % INTERVAL_S)
    return _EPOCH + timedelta(milliseconds=k * INTERVAL_S * 1000 // n)


async def _register(url: str, db_url: str, n: int, spread: str) -> dict[str, float]:
    from sqlalchemy.ext.asyncio import create_async_engine

    from asyncsched.config import Settings
    from asyncsched.scheduler import TaskScheduler, build_task
    from asyncsched.store.models import Base

    engine = create_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    await engine.dispose()
    t0, c0 = time.perf_counter(), time.process_time()
    tasks = [
        build_task(
            agent_name="bench",
            name=f"t{k}",
            function="tasks_asyncsched:noop",
            args=[k],
            type="interval",
            schedule=f"{INTERVAL_S} seconds",
            start=_anchor(k, n, spread).isoformat(),
            overlap="allow",  # no worker runs the jobs: every tick is enqueued
        )
        for k in range(n)
    ]
    t1, c1 = time.perf_counter(), time.process_time()
    settings = Settings(redis_url=url, database_url=db_url)
    async with TaskScheduler(url, settings=settings) as scheduler:
        await scheduler.add_tasks(tasks)
    return {
        "validate_s": round(t1 - t0, 2),
        "validate_cpu_s": round(c1 - c0, 2),
        "store_s": round(time.perf_counter() - t1, 2),
        "store_cpu_s": round(time.process_time() - c1, 2),
    }


def _database(url: str, tmp: str, n: int, spread: str) -> tuple[str, dict[str, float]]:
    path = os.path.join(tmp, "w6-100k.db")
    cache_dir = os.environ.get("BENCH_CACHE_DIR")
    cached = os.path.join(cache_dir, f"w6-100k-{spread}-{n}.db") if cache_dir else None
    if cached and os.path.exists(cached):
        shutil.copyfile(cached, path)
        return f"sqlite+aiosqlite:///{path}", {}
    db_url = f"sqlite+aiosqlite:///{path}"
    timings = asyncio.run(_register(url, db_url, n, spread))
    if cached:
        shutil.copyfile(path, cached)
    return db_url, timings


class _Claims:
    """Reads the claimed-ticks stream as it grows (it is capped near 10,000 entries: ten seconds here)."""

    def __init__(self, url: str) -> None:
        import threading

        import redis

        self.r = redis.Redis.from_url(url)
        self.claims: list[tuple[str, int]] = []
        self._last = "0-0"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            rows = self.r.xrange(_fired_key(), min=f"({self._last}", count=50_000)
            if not rows:
                return
            self._last = rows[-1][0].decode()
            self.claims += [(f[b"task"].decode(), int(f[b"tick"])) for _id, f in rows]

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._read()

    def stop(self) -> list[tuple[str, int]]:
        self._stop.set()
        self._thread.join()
        self._read()
        full = self.r.xrange(_fired_key(), count=10_000_000)  # what the stream still holds
        held = {(f[b"task"].decode(), int(f[b"tick"])) for _id, f in full}
        self.missed = len(held - set(self.claims))  # 0 unless this reader lost entries
        self.r.close()
        return self.claims


def _fresh(db_url: str) -> None:
    """Clear the run times, as on a fresh registration: registering and starting 100,000 schedules takes
    longer than one interval here, and the first pass would otherwise be a misfire of every task (the
    misfire policy's case, not this cell's); with no run time the first tick indexed is the next one."""
    import sqlite3

    with sqlite3.connect(db_url.split("///", 1)[1]) as conn:
        conn.execute("UPDATE asyncsched_scheduled_tasks SET next_run_at = NULL, last_run_at = NULL")


def _catch_up(claims: _Claims, timeout: float) -> float | None:
    """When the replicas have claimed every tick due so far (the latest claim is within 0.5 s of now):
    start-up takes longer than it takes ticks to fall due. ``None``: not within ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        latest = max((tick for _task, tick in claims.claims[-2000:]), default=0)
        if latest >= (time.time() - 0.5) * 1000:
            return time.time()
        time.sleep(0.2)
    return None


def _dispatch(
    url: str, db_url: str, tmp: str, replicas: int, measure: int, profile: str | None = None
) -> dict[str, Any]:
    claims = _Claims(url)
    procs = [
        _spawn(url, db_url, os.path.join(tmp, f"sched-{i}.out"), profile if i == 0 else None)
        for i in range(replicas)
    ]
    monitors = [Monitor(p.pid, interval=0.5).__enter__() for p in procs]
    spawned = time.time()
    try:
        ready = max(
            _wait_running(os.path.join(tmp, f"sched-{i}.out"), p, timeout=900) for i, p in enumerate(procs)
        )
        started_s = ready - spawned
        caught_up = _catch_up(claims, timeout=180)  # the backlog of ticks that fell due during start-up
        ready = caught_up if caught_up is not None else time.time()
        time.sleep(max(0.0, ready + 2 - time.time()))
        for mon in monitors:
            mon.sample()
        c0, t0, r0, n0 = sum(m.cpu_seconds() for m in monitors), time.monotonic(), *_redis_work(claims.r)
        time.sleep(measure)
        for mon in monitors:
            mon.sample()
        replicas_cpu = sum(m.cpu_seconds() for m in monitors) - c0
        cpu = replicas_cpu / (time.monotonic() - t0)
        r1, n1 = _redis_work(claims.r)
        redis_cpu, redis_commands, load_in_window = r1 - r0, n1 - n0, os.getloadavg()
        time.sleep(4)  # late ticks of the window
    finally:
        for proc in procs:
            stop_worker(proc)
        for mon in monitors:
            mon.__exit__()
    return {
        "replicas": replicas,
        "startup_s": round(started_s, 1),
        "catch_up_s": None if caught_up is None else round(caught_up - spawned - started_s, 1),
        "window_s": measure,
        "window_ms": (int((ready + 2) * 1000), int((ready + 2 + measure) * 1000)),
        "cpu_cores": round(cpu, 3),
        "replicas_cpu_s": round(replicas_cpu, 2),
        "redis_cpu_s": round(redis_cpu, 2),
        "redis_commands": redis_commands,
        "load_in_window": [round(x, 2) for x in load_in_window],
        "peak_rss_mb": round(max(m.peak_mb() for m in monitors), 1),
        "_claims": claims.stop(),
        "reader_missed": claims.missed,
    }


def _redis_work(r: Any) -> tuple[float, int]:
    """redis-server's CPU seconds and the commands it has run (those of scripts included)."""
    info = r.info("cpu")
    calls = sum(int(v["calls"]) for v in r.info("commandstats").values())
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"]), calls


def _verdict(url: str, db_path: str, out: dict[str, Any], n: int, spread: str) -> dict[str, Any]:
    """Exactly once: each (task, tick) due in the window claimed once and enqueued, none missing; lags."""
    import sqlite3

    import redis

    start_ms, end_ms = out.pop("window_ms")
    claimed = out["_claims"]
    if claimed and max(t for _, t in claimed) < start_ms:  # never caught up: check every tick claimed
        start_ms = min(t for _, t in claimed)  # (but the last 2 s, in flight when the replicas stopped)
        end_ms = max(t for _, t in claimed) - 2000
        out["window_s"] = (end_ms - start_ms) / 1000
        out["checked"] = "every tick of the run (the replicas never caught up)"
    with sqlite3.connect(db_path) as conn:
        ids = dict(conn.execute("SELECT name, id FROM asyncsched_scheduled_tasks").fetchall())
    expected: list[tuple[str, int]] = []
    step = INTERVAL_S * 1000
    for k in range(n):  # every tick of task k in [start, end): anchor + j * interval
        anchor = (_anchor(k, n, spread) - _EPOCH) // timedelta(milliseconds=1)  # exact (not float)
        first = anchor + -(-(start_ms - anchor) // step) * step
        expected += [(ids[f"t{k}"], tick) for tick in range(first, end_ms, step)]
    r = redis.Redis.from_url(url)
    pipe = r.pipeline(transaction=False)
    for task, tick in expected:
        pipe.hget(f"rq:job:sched-{task}-{tick // 1000}", "enqueued_at")
    lags, jobs = [], []
    for (task, tick), raw in zip(expected, pipe.execute(), strict=True):
        ts = _parse_ts(raw)
        if ts is not None:
            lags.append(ts * 1000 - tick)
            jobs.append((task, tick))
    r.close()
    due: dict[int, int] = {}
    for _task, tick in expected:
        due[tick] = due.get(tick, 0) + 1
    cpu = out["cpu_cores"]
    return {
        "claims_total": len(claimed),  # the whole run, warm-up and backlog included
        "claimed_ms_from_window_start": (
            [min(t for _, t in claimed) - start_ms, max(t for _, t in claimed) - start_ms]
            if claimed
            else None
        ),
        "ticks_per_s": round(len(expected) / out["window_s"], 1),
        "cpu_ms_per_tick": round(1000 * cpu / max(len(expected) / out["window_s"], 1), 3),
        "redis_commands_per_tick": round(out["redis_commands"] / max(len(expected), 1), 1),
        "lag_p50_ms": round(percentile(lags, 0.5), 2),
        "lag_p99_ms": round(percentile(lags, 0.99), 2),
        "lag_max_ms": round(max(lags, default=float("nan")), 2),
        **check_ticks(jobs, out.pop("_claims"), due),
    }


def _idle(url: str, db_url: str, tmp: str, seconds: int) -> dict[str, Any]:
    import redis

    r = redis.Redis.from_url(url)
    out = os.path.join(tmp, "sched-idle.out")
    proc = _spawn(url, db_url, out)
    with Monitor(proc.pid, interval=0.5) as mon:
        try:
            _wait_running(out, proc, timeout=900)
            # nothing due: every entry a week ahead (the scheduler keeps the index it finds: same signature)
            key = _next_key()
            entries = r.zrange(key, 0, -1, withscores=True)
            later = 7 * 86400 * 1000 + int(time.time() * 1000)
            pipe = r.pipeline(transaction=False)
            for i in range(0, len(entries), 10_000):
                pipe.zadd(key, {m: later for m, _s in entries[i : i + 10_000]})
            pipe.execute()
            time.sleep(6)  # what was due finishes
            mon.sample()
            c0, t0 = mon.cpu_seconds(), time.monotonic()
            time.sleep(seconds)
            mon.sample()
            cpu = 100 * (mon.cpu_seconds() - c0) / (time.monotonic() - t0)
            rss = mon.rss_now_mb()
        finally:
            stop_worker(proc)
    r.close()
    return {"idle_cpu_percent": round(cpu, 2), "idle_rss_mb": round(rss, 1), "idle_window_s": seconds}


def _next_key() -> str:
    from asyncsched._keys import sched_next

    return sched_next("rq")


def main() -> None:
    from tests.servers import redis_server

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--spread", choices=["ms", "s"], default="ms")
    parser.add_argument("--measure", type=int, default=10, help="seconds of the dispatch window")
    parser.add_argument("--idle", type=int, default=10, help="seconds of the idle window (0: skip)")
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile the first replica of the dispatch run into FILE (pstats)"
    )
    args = parser.parse_args()
    result: dict[str, Any] = {"n": args.n, "spread": args.spread, "load_before": os.getloadavg()}
    with redis_server() as redis, tempfile.TemporaryDirectory() as tmp:
        import redis as syncredis

        db_url, timings = _database(redis.url, tmp, args.n, args.spread)
        result.update(timings)
        _fresh(db_url)
        syncredis.Redis.from_url(redis.url).flushall()
        out = _dispatch(redis.url, db_url, tmp, args.replicas, args.measure, args.profile)
        verdict = _verdict(redis.url, db_url.split("///", 1)[1], out, args.n, args.spread)
        result.update(out)
        result.update(verdict)
        if args.idle:
            syncredis.Redis.from_url(redis.url).flushall()
            result.update(_idle(redis.url, db_url, tmp, args.idle))
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    print(_summary(result), file=sys.stderr)


def _summary(r: dict[str, Any]) -> str:
    """The result in words, for whoever re-runs this on another machine."""
    cores = os.cpu_count() or 1
    load = r.get("load_in_window", r["load_after"])
    lines = [
        f"W6 100k on {cores} core(s): {r['n']} interval schedules, {r['ticks_per_s']} ticks/s due, "
        f"{r['replicas']} replicas; the run is {'VALID' if r['valid'] else 'INVALID'} (exactly once: "
        f"{r['duplicates']} duplicate, {r['missing']} missing).",
        f"  dispatch lag p50 {r['lag_p50_ms']} ms, p99 {r['lag_p99_ms']} ms (target p99 <= 20), max "
        f"{r['lag_max_ms']} ms: wall time, so it includes every wait for a CPU.",
        f"  CPU over the {r['window_s']} s window: replicas {r['replicas_cpu_s']} s "
        f"({r['cpu_ms_per_tick']} ms per tick), redis-server {r['redis_cpu_s']} s ("
        f"{r['redis_commands_per_tick']} commands per tick, scripts' own included): what the work costs, "
        "whatever else runs.",
        f"  load average (1/5/15 min) in the window {load}; before {[round(x, 2) for x in r['load_before']]}."
        f" A 1-min load above {cores} means runnable processes waited for a core: lag then measures the "
        "machine; compare CPU per tick instead, or re-run on a quiet machine.",
        f"  peak RSS of the largest replica {r['peak_rss_mb']} MB (target <= 150).",
    ]
    if "validate_s" in r:
        lines.append(
            f"  registration (SQLite): validate {r['validate_s']} s wall / {r['validate_cpu_s']} s CPU, "
            f"store {r['store_s']} s wall / {r['store_cpu_s']} s CPU (this process)."
        )
    if "idle_cpu_percent" in r:
        lines.append(f"  idle: {r['idle_cpu_percent']} % of a core, RSS {r['idle_rss_mb']} MB.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
