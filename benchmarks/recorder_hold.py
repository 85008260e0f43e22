"""The Recorder's loop with and without holding rows that have no outcome yet (``hold_queued``).

A synthetic lifecycle stream as a steady workload makes it: N jobs in chunks of ``--chunk`` (each chunk's
queued, then started, then success records, as a worker that keeps up writes them), recorded by the
Recorder's own loop (``async with Recorder(...)``) on a fresh database until every record is acknowledged
and nothing is held. Reported per ``hold_queued`` value: row writes, wall and CPU time of this process (the
Recorder; SQLite's work included), PostgreSQL's CPU time, rows per Recorder CPU-second.

    python benchmarks/recorder_hold.py --n 50000 --db postgresql
    python benchmarks/recorder_hold.py --n 50000 --db sqlite --holds 0 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from _common import tree_cpu  # noqa: E402
from profile_recorder import _fresh_db  # noqa: E402


async def _fill(url: str, n: int, chunk: int) -> None:
    from asyncsched import _keys
    from asyncsched._lifecycle import Lifecycle, LifecycleRecord
    from asyncsched._redis import create_redis

    redis = create_redis(url)
    stream = _keys.lifecycle_stream("rq")
    t0 = time.time() - 600
    common = {"queue": "default", "function": "tasks:noop", "agent_name": "bench"}
    for start in range(0, n, chunk):
        pipe = redis.pipeline(transaction=False)
        jobs = [f"job-{i:08d}" for i in range(start, min(n, start + chunk))]
        for kind in (Lifecycle.QUEUED, Lifecycle.STARTED, Lifecycle.SUCCESS):
            for job in jobs:
                extra: dict[str, Any] = {"enqueued_at": t0}
                if kind is not Lifecycle.QUEUED:
                    extra.update(started_at=t0 + 0.01, worker="w1")
                if kind is Lifecycle.SUCCESS:
                    extra.update(ended_at=t0 + 0.02, result="null")
                record = LifecycleRecord(kind, job, **common, **extra)
                pipe.xadd(stream, record.encode())  # type: ignore[arg-type]
        await pipe.execute()
    await redis.aclose()


async def _record(url: str, db_url: str, hold: float, pg_pid: int | None) -> dict[str, Any]:
    from asyncsched.config import Settings
    from asyncsched.store import Database, Recorder

    settings = Settings(redis_url=url, database_url=db_url, retention_days=0)
    writes = 0
    async with Database(db_url, settings=settings, auto_migrate=False) as db:
        rec = Recorder(url, db=db, settings=settings, events=False, hold_queued=hold)
        real = rec._upsert

        async def counting(conn: Any, rows: Any) -> None:
            nonlocal writes
            writes += len(rows)
            await real(conn, rows)

        rec._upsert = counting  # type: ignore[method-assign]
        db_cpu = tree_cpu(pg_pid) if pg_pid else 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        async with rec:
            while await rec.account.backlog() or len(rec.hold):
                await asyncio.sleep(0.1)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        db_cpu = tree_cpu(pg_pid) - db_cpu if pg_pid else 0.0
    return {"hold_queued": hold, "row_writes": writes, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "postgres_cpu_s": round(db_cpu, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--chunk", type=int, default=200)
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--holds", type=float, nargs="+", default=[0.0, 1.0])
    opts = parser.parse_args()
    from tests.servers import postgres_server, redis_server

    with postgres_server() as pg:
        with open(os.path.join(pg.datadir, "postmaster.pid")) as fh:
            pg_pid = int(fh.readline())
        for hold in opts.holds:
            with tempfile.TemporaryDirectory() as tmp, redis_server() as server:
                os.chmod(tmp, 0o777)
                db_url = _fresh_db(pg, opts.db, tmp) if opts.db == "sqlite" else _fresh_pg(pg, tmp, hold)
                asyncio.run(_fill(server.url, opts.n, opts.chunk))
                out = asyncio.run(
                    _record(server.url, db_url, hold, pg_pid if opts.db == "postgresql" else None)
                )
                out.update(
                    db=opts.db, n=opts.n, chunk=opts.chunk, rows_per_cpu_s=round(opts.n / out["cpu_s"])
                )
                print(json.dumps(out), flush=True)


def _fresh_pg(pg: Any, tmp: str, hold: float) -> str:
    import subprocess

    name = f"hold{int(hold * 1000)}"
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "asyncsched", "-d", "postgres", "-qc",
         f"CREATE DATABASE {name}"],
        check=True, user=pg.user,
    )  # fmt: skip
    url: str = pg.url(name)

    async def migrate() -> None:
        from asyncsched.store import Database

        async with Database(url, auto_migrate=False) as db:
            await db.migrate()

    asyncio.run(migrate())
    return url


if __name__ == "__main__":
    main()
