"""Where the Recorder's time goes: N jobs' real lifecycle records (3N) recorded in-process, profiled.

The records are made once by the real queue and worker (N jobs enqueued in bulk and drained by one worker)
and kept as a Redis dump (``--cache``, default ``/tmp/asyncsched-recorder-N.rdb``), so each run starts
from the same stream. The Recorder then runs in this process against a fresh database: its own loop, as in
production (rows without an outcome held back ``--hold`` seconds), until every entry is acknowledged and
nothing is held; ``--flush``: ``flush()`` until the backlog is empty instead (nothing held). Reported: wall
time and rows/s, the Recorder's CPU (this process; SQLite's thread included) in seconds and per row,
PostgreSQL's CPU (postmaster and backends) and Redis' over the same span, the load average at the end,
and (``--profile``) the top functions by cumulative and own time.

    python benchmarks/profile_recorder.py --n 200000 --db postgresql
    python benchmarks/profile_recorder.py --n 200000 --db sqlite --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from _common import spawn_worker, stop_worker, tree_cpu  # noqa: E402
from w8_history import _check_sql, _cpu, _enqueue, _env, _loadavg, _wait_log  # noqa: E402


def _make_stream(n: int, cache: str) -> None:
    import redis
    from tests.servers import redis_server

    with tempfile.TemporaryDirectory() as tmp, redis_server() as server:
        os.chmod(tmp, 0o777)
        log = os.path.join(tmp, "jobs.log")
        env = _env(server.url, "sqlite+aiosqlite:///unused.db", log)
        asyncio.run(_enqueue(server.url, n))
        worker = spawn_worker([sys.executable, os.path.join(HERE, "asyncsched_worker.py")], env)
        try:
            _wait_log(log, n, timeout=900)
        finally:
            stop_worker(worker)
        client = redis.Redis.from_url(server.url, socket_timeout=600)
        client.save()
        shutil.copy(os.path.join(server.workdir, "dump.rdb"), cache)


async def _drain_flush(recorder: Any) -> int:
    """``flush()`` until the backlog is empty (no rows held back)."""
    handled = 0
    while True:
        got = await recorder.flush()
        handled += got
        if not got and await recorder.account.backlog() == 0:
            return int(handled)


async def _drain_loop(recorder: Any) -> int:
    """The Recorder's own loop (as in production, rows without an outcome held back), until every
    entry is acknowledged and nothing is held."""
    async with recorder:
        while await recorder.account.backlog() or len(recorder.hold):
            await asyncio.sleep(0.05)  # (polling costs this process ~1-2% of its CPU)
        return int(recorder.recorded)


async def _record(
    redis_url: str, db_url: str, opts: argparse.Namespace, pg_pid: int, redis_pid: int
) -> dict[str, Any]:
    from asyncsched.config import Settings
    from asyncsched.store import Database, Recorder

    settings = Settings(redis_url=redis_url, database_url=db_url, retention_days=0)
    async with Database(db_url, settings=settings, auto_migrate=False) as db:
        recorder = Recorder(
            redis_url,
            db=db,
            settings=settings,
            batch_size=opts.batch_size,
            in_flight=opts.in_flight,
            events=False,
            claim_idle=3600.0,
            hold_queued=opts.hold,
        )
        prof = cProfile.Profile() if opts.profile else None
        db_cpu = tree_cpu(pg_pid) if opts.db == "postgresql" else 0.0
        redis_cpu = _cpu(redis_pid)
        wall, cpu = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        handled = await (_drain_flush(recorder) if opts.flush else _drain_loop(recorder))
        if prof:
            prof.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        db_cpu = tree_cpu(pg_pid) - db_cpu if opts.db == "postgresql" else 0.0
        redis_cpu = _cpu(redis_pid) - redis_cpu
        if opts.flush:
            await recorder.redis.aclose()  # (the loop's Recorder closed its own)
    out: dict[str, Any] = {
        "db": opts.db, "mode": "flush" if opts.flush else "loop", "n": opts.n, "entries": handled,
        "wall_s": round(wall, 2), "rows_per_s": round(opts.n / wall),
        "recorder_cpu_s": round(cpu, 2), "rows_per_recorder_cpu_s": round(opts.n / cpu),
        "recorder_cpu_us_per_row": round(cpu / opts.n * 1e6, 1),
        "postgres_cpu_s": round(db_cpu, 2), "redis_cpu_s": round(redis_cpu, 2),
        "batch_size": opts.batch_size, "in_flight": opts.in_flight, "hold": opts.hold, "loadavg": _loadavg(),
    }  # fmt: skip
    if prof:
        for key in ("cumulative", "tottime"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(opts.top)
            out[f"profile_{key}"] = buf.getvalue()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--flush", action="store_true", help="drain with flush() (nothing held back), not the loop"
    )
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--hold", type=float, default=1.0, help="the Recorder's hold_queued (seconds)")
    parser.add_argument("--cache", default=None)
    opts = parser.parse_args()
    cache = opts.cache or f"/tmp/asyncsched-recorder-{opts.n}.rdb"
    if not os.path.exists(cache):
        _make_stream(opts.n, cache)
    from tests.servers import _spawn_redis, free_port, postgres_server

    with tempfile.TemporaryDirectory() as tmp, postgres_server() as pg:
        os.chmod(tmp, 0o777)
        shutil.copy(cache, os.path.join(tmp, "dump.rdb"))
        port = free_port()
        proc = _spawn_redis(port, tmp)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            _wait_loaded(url)

            db_url = _fresh_db(pg, opts.db, tmp)
            with open(os.path.join(pg.datadir, "postmaster.pid")) as fh:
                pg_pid = int(fh.readline())
            out = asyncio.run(_record(url, db_url, opts, pg_pid, proc.pid))
            out.update(asyncio.run(_check_sql(db_url, opts.n)))
        finally:
            proc.terminate()
            proc.wait()
    profiles = {k: out.pop(k) for k in list(out) if k.startswith("profile_")}
    print(json.dumps(out, default=str))
    for text in profiles.values():
        print(text)


def _wait_loaded(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    while client.info("persistence").get("loading"):
        time.sleep(0.1)
    client.close()


def _fresh_db(pg: Any, kind: str, tmp: str) -> str:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp}/history.db"
    else:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "asyncsched", "-d", "postgres", "-qc",
             "CREATE DATABASE history"],
            check=True, user=pg.user,
        )  # fmt: skip
        url = pg.url("history")

    async def migrate() -> None:
        from asyncsched.store import Database

        async with Database(url, auto_migrate=False) as db:
            await db.migrate()

    asyncio.run(migrate())
    return url


if __name__ == "__main__":
    main()
