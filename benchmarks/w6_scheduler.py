"""W6: one ``TaskScheduler`` process with 10,000 registered schedules: idle CPU and dispatch lag.

* **idle**: 10,000 yearly cron tasks (none due): the scheduler process's CPU over a 10 s window.
* **dispatch**: 10,000 interval tasks of ``1 minute``, anchored one second apart in sixty groups
  (``start`` = epoch + k % 60 s), so about 167 ticks fall due every second. After a warm-up second, every job
  the scheduler enqueued for a tick inside the measuring window is read back from Redis: its id carries the
  tick (``sched-<task>-<tick epoch>``), its hash the ``enqueued_at`` time; lag = enqueued_at - tick.
  Valid when every (task, tick) due in the window was claimed exactly once and enqueued (:func:`check_ticks`):
  the job ids are unique by construction, so a double claim is read from the scheduler's stream of claimed
  ticks (one entry per claim), and no job may exist without its claim.

Run as a script it is the scheduler process (``python w6_scheduler.py <redis url> <database url>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import Monitor, percentile, stop_worker  # noqa: E402

INTERVAL_S = 60
MEASURE_S = 10
LAG_MARGIN_S = 4  # a tick enqueued later than this after the window counts as missing


def _settings(url: str, db_url: str) -> Any:
    from asyncsched.config import Settings

    return Settings(redis_url=url, database_url=db_url)


def _database(url: str, tmp: str, n: int, kind: str) -> tuple[str, float | None]:
    """A SQLite database holding the ``kind`` schedules, registered through the API (timed).

    With ``BENCH_CACHE_DIR`` set, later runs copy the first run's database instead of registering again.
    The harness does not set it: W6 measures the normal register-then-run path (a copied database starts
    with an empty Redis index, which the scheduler before 05d9eca handled by reloading on every pass)."""
    path = os.path.join(tmp, f"w6-{kind}.db")
    cache_dir = os.environ.get("BENCH_CACHE_DIR")
    cached = os.path.join(cache_dir, f"w6-{kind}-{n}.db") if cache_dir else None
    if cached and os.path.exists(cached):
        shutil.copyfile(cached, path)
        return f"sqlite+aiosqlite:///{path}", None
    db_url = f"sqlite+aiosqlite:///{path}"
    seconds = asyncio.run(_register(url, db_url, n, kind))
    if cached:
        shutil.copyfile(path, cached)
    return db_url, seconds


async def _register(url: str, db_url: str, n: int, kind: str) -> float:
    from sqlalchemy.ext.asyncio import create_async_engine

    from asyncsched.scheduler import TaskScheduler, build_task
    from asyncsched.store.models import Base

    engine = create_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    await engine.dispose()
    tasks = []
    for k in range(n):
        if kind == "idle":
            spec: dict[str, Any] = {"type": "cron", "schedule": "0 0 1 1 *"}
        else:
            start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=k % INTERVAL_S)
            spec = {"type": "interval", "schedule": f"{INTERVAL_S} seconds", "start": start.isoformat()}
            # the tick of task k falls on epoch seconds ≡ k (mod INTERVAL_S)
        tasks.append(
            build_task(agent_name="bench", name=f"t{k}", function="tasks_asyncsched:noop", args=[k], **spec)
        )
    t0 = time.perf_counter()
    async with TaskScheduler(url, settings=_settings(url, db_url)) as scheduler:
        for start_i in range(0, n, 1000):
            await scheduler.register_tasks(tasks[start_i : start_i + 1000])
    return time.perf_counter() - t0


def _spawn(url: str, db_url: str, out: str, profile: str | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if profile:
        env["W6_PROFILE"] = profile
    fh = open(out, "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), url, db_url],
        cwd=HERE,
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_running(out: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(out, "rb") as fh:
            if b"scheduler running" in fh.read():
                return time.time()
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    with open(out, "rb") as fh:
        tail = fh.read()[-1500:].decode(errors="replace")
    raise RuntimeError(f"scheduler did not start:\n{tail}")


def _parse_ts(raw: bytes | None) -> float | None:
    if not raw:
        return None
    text = raw.decode().rstrip("Z")
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def run_w6(url: str, n: int, tmp: str) -> dict[str, Any]:
    import redis

    r = redis.Redis.from_url(url)
    result: dict[str, Any] = {"n": n, "valid": True}

    # -- idle
    r.flushall()
    db_idle, register_s = _database(url, tmp, n, "idle")
    if register_s is not None:
        result["register_s"] = register_s
    out = os.path.join(tmp, "sched-idle.out")
    proc = _spawn(url, db_idle, out)
    with Monitor(proc.pid, interval=0.5) as mon:
        try:
            _wait_running(out, proc)
            time.sleep(1)
            mon.sample()
            c0, t0 = mon.cpu_seconds(), time.monotonic()
            time.sleep(5)
            mon.sample()
            result["idle_cpu_percent"] = 100 * (mon.cpu_seconds() - c0) / (time.monotonic() - t0)
            result["idle_rss_mb"] = mon.rss_now_mb()
        finally:
            stop_worker(proc)

    # -- dispatch
    r.flushall()
    db_run, _ = _database(url, tmp, n, "dispatch")
    out = os.path.join(tmp, "sched-run.out")
    proc = _spawn(url, db_run, out)
    with Monitor(proc.pid, interval=0.5) as mon:
        try:
            ready = _wait_running(out, proc)
            time.sleep(MEASURE_S + 2 + LAG_MARGIN_S)
        finally:
            stop_worker(proc)
        result["peak_rss_mb"] = mon.peak_mb()
    window = range(int(ready) + 2, int(ready) + 2 + MEASURE_S)
    jobs = []
    for key in (k.decode() for k in r.scan_iter(match="rq:job:sched-*", count=5000)):
        task, tick = key.removeprefix("rq:job:sched-").rsplit("-", 1)
        jobs.append((task, int(tick), key))
    wanted = [(key, tick) for _task, tick, key in jobs if tick in window]
    pipe = r.pipeline(transaction=False)
    for key, _tick in wanted:
        pipe.hget(key, "enqueued_at")
    lags = []
    for (_key, tick), raw in zip(wanted, pipe.execute(), strict=True):
        ts = _parse_ts(raw)
        if ts is not None:
            lags.append((ts - tick) * 1000)
    claims = [
        (fields[b"task"].decode(), int(fields[b"tick"]) // 1000)
        for _id, fields in r.xrange(_fired_key(), count=10_000_000)
    ]
    due = {tick: len(range(tick % INTERVAL_S, n, INTERVAL_S)) for tick in window}
    verdict = check_ticks([(task, tick) for task, tick, _key in jobs], claims, due)
    verdict["valid"] = result["valid"] and verdict["valid"]
    result.update(
        dispatch_window_s=len(window),
        lag_p50_ms=percentile(lags, 0.5),
        lag_p99_ms=percentile(lags, 0.99),
        lag_max_ms=max(lags, default=float("nan")),
        **verdict,
    )
    r.close()
    return result


def _fired_key(prefix: str = "rq") -> str:
    from asyncsched._keys import sched_fired

    return sched_fired(prefix)


def check_ticks(
    jobs: list[tuple[str, int]], claims: list[tuple[str, int]], due: dict[int, int]
) -> dict[str, Any]:
    """W6's validity: each (task, tick) due in the window claimed once and enqueued once.

    ``jobs``: (task id, tick s) of every scheduled job in Redis; ``claims``: (task id, tick s) of every
    entry of the scheduler's claimed-ticks stream; ``due``: tick s -> how many tasks fall due then (the
    window). Ticks outside the window are ignored."""
    enqueued = {(task, tick) for task, tick in jobs if tick in due}
    claimed = [(task, tick) for task, tick in claims if tick in due]
    per_tick: dict[int, int] = {}
    for _task, tick in enqueued:
        per_tick[tick] = per_tick.get(tick, 0) + 1
    expected = sum(due.values())
    missing = sum(max(count - per_tick.get(tick, 0), 0) for tick, count in due.items())
    extra = sum(max(per_tick.get(tick, 0) - count, 0) for tick, count in due.items())
    duplicates = len(claimed) - len(set(claimed))
    unclaimed = len(enqueued - set(claimed))
    errors = []
    if missing:
        errors.append(f"{missing} of {expected} due (task, tick) pairs were not enqueued")
    if extra:
        errors.append(f"{extra} (task, tick) pairs enqueued beyond the {expected} due")
    if duplicates:
        errors.append(f"{duplicates} (task, tick) pairs were claimed more than once")
    if unclaimed:
        errors.append(f"{unclaimed} jobs were enqueued without a claim of their tick")
    out: dict[str, Any] = {
        "valid": not errors,
        "expected": expected,
        "fired": len(enqueued),
        "claims": len(claimed),
        "missing": missing,
        "extra": extra,
        "duplicates": duplicates,
        "unclaimed": unclaimed,
    }
    if errors:
        out["error"] = "; ".join(errors)
    return out


async def _serve(url: str, db_url: str) -> None:
    from asyncsched.scheduler import TaskScheduler

    async with TaskScheduler(url, settings=_settings(url, db_url)) as scheduler:
        task = asyncio.create_task(scheduler.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _Quiet(logging.Filter):
    """WARNING and above, plus the one INFO line that says the scheduler is up (per-fire INFO lines would
    cost the scheduler process a formatted write per dispatch)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # (the format string, not the message: formatting every filtered line would cost the replica more)
        return record.levelno >= logging.WARNING or str(record.msg).startswith("scheduler running")


def _main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Quiet())
    profile = os.environ.get("W6_PROFILE")  # a cProfile dump of this replica, written when it stops
    if not profile:
        asyncio.run(_serve(sys.argv[1], sys.argv[2]))
        return
    import cProfile

    profiler = cProfile.Profile()

    class _Start(logging.Filter):  # profile the steady state: from "scheduler running" on (not start-up)
        def filter(self, record: logging.LogRecord) -> bool:
            if str(record.msg).startswith("scheduler running"):
                profiler.enable()
            return True

    logging.getLogger("asyncsched.scheduler").addFilter(_Start())
    try:
        asyncio.run(_serve(sys.argv[1], sys.argv[2]))
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


if __name__ == "__main__":
    _main()
