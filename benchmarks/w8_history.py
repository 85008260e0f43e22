"""W8: history on. N no-op jobs drained by one worker (``-c 100``) while a Recorder writes the history.

For each database (PostgreSQL, SQLite) two runs on a fresh Redis and database:

* **live**: the Recorder process runs throughout; N jobs are bulk-enqueued, then one worker drains them.
  Reported: worker jobs/s (from the jobs' own log), the history's lag (last job end -> every row final),
  and the Recorder's rows/s over the whole run.
* **catch-up** (the Recorder's sustained capacity): the worker drains the N jobs with no Recorder running
  (3N lifecycle records wait in Redis); then the Recorder starts and is timed until it has recorded them.
  rows/s = N execution rows / that time (records/s = 3N / time).

Valid only if the jobs' log has N executions of N distinct jobs, and SQL has exactly N rows, all
``success``, with started/ended times (every execution checked in SQL), and nothing was lost.

    python benchmarks/w8_history.py --n 200000            # both databases
    python benchmarks/w8_history.py --n 20000 --db sqlite

Run as ``w8_history.py recorder <redis url> <database url>`` it is the Recorder process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from _common import spawn_worker, stop_worker  # noqa: E402


async def _recorder_main(url: str, db_url: str) -> None:
    import signal

    from asyncsched.config import Settings
    from asyncsched.store import Database, Recorder

    settings = Settings(redis_url=url, database_url=db_url, retention_days=0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with Database(db_url, settings=settings) as db, Recorder(url, db=db, settings=settings):
        print("ready", flush=True)
        await stop.wait()


def _env(url: str, db_url: str, log: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BENCH_LOG=log,
        BENCH_REDIS_URL=url,
        REDIS_URL=url,
        DATABASE_URL=db_url,
        ASYNCSCHED_LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), HERE, env.get("PYTHONPATH", "")]),
    )
    return env


def _start_recorder(url: str, db_url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "recorder", url, db_url],
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"recorder did not start: {line!r}")
    return proc


async def _enqueue(url: str, n: int) -> None:
    from asyncsched.config import Settings
    from asyncsched.queue import TaskQueue

    async with TaskQueue(url, settings=Settings(redis_url=url)) as queue:
        for start in range(0, n, 1000):
            await queue.enqueue_many(
                [{"func": "tasks_asyncsched.noop", "args": (i,)} for i in range(start, min(n, start + 1000))]
            )


async def _backlog(url: str) -> int:
    from asyncsched._redis import create_redis
    from asyncsched.store._history_loss import StreamAccount

    redis = create_redis(url)
    try:
        return await StreamAccount(redis, "rq", "recorder", "bench").backlog()
    finally:
        await redis.aclose()


async def _check_sql(db_url: str, n: int) -> dict[str, Any]:
    from sqlalchemy import func, select

    from asyncsched.store import Database, TaskExecution

    t = TaskExecution
    async with Database(db_url, auto_migrate=False) as db, db.engine.connect() as conn:
        by_status = dict((await conn.execute(select(t.status, func.count()).group_by(t.status))).all())
        complete = await conn.scalar(
            select(func.count()).where(
                t.status == "success", t.started_at.is_not(None), t.ended_at.is_not(None),
                t.duration.is_not(None), t.attempt == 1,
            )
        )  # fmt: skip
        distinct = await conn.scalar(select(func.count(func.distinct(t.job_id))))
    ok = complete == n and distinct == n and sum(by_status.values()) == n
    return {"rows_by_status": by_status, "rows_complete": complete, "ok": ok}


async def _lost(url: str) -> int:
    from asyncsched._redis import create_redis
    from asyncsched.store._history_loss import history_loss

    redis = create_redis(url)
    try:
        return (await history_loss(redis, "rq")).lost
    finally:
        await redis.aclose()


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far: a rate per CPU second does not depend on
    how busy the machine is."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _joblog(log: str, n: int) -> tuple[float, float, bool]:
    ids, first, last, lines = set(), float("inf"), 0.0, 0
    with open(log) as fh:
        for line in fh:
            i, start, end, _ = line.split()
            ids.add(int(i))
            first, last, lines = min(first, float(start)), max(last, float(end)), lines + 1
    return first, last, lines == n and len(ids) == n


def _wait_log(log: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(log):
            with open(log) as fh:
                if sum(1 for _ in fh) >= n:
                    return
        time.sleep(0.2)
    raise TimeoutError(f"the worker did not run {n} jobs in {timeout}s")


def _wait_recorded(url: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(_backlog(url)) == 0:
            return time.time()
        time.sleep(0.1)
    raise TimeoutError("the recorder did not catch up")


def _fresh(server: Any, pg: Any, kind: str, tmp: str, tag: str) -> str:
    """Empty Redis and a new migrated database; returns its URL."""
    import redis

    redis.Redis.from_url(server.url, socket_timeout=600).flushall(asynchronous=True)
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp}/{tag}.db"
    else:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "asyncsched", "-d", "postgres", "-qc",
             f"CREATE DATABASE {tag}"],
            check=True, user=pg.user,
        )  # fmt: skip
        url = pg.url(tag)

    async def migrate() -> None:
        from asyncsched.store import Database

        async with Database(url, auto_migrate=False) as db:
            await db.migrate()

    asyncio.run(migrate())
    return url


def run_cell(server: Any, pg: Any, kind: str, n: int, mode: str, tmp: str) -> dict[str, Any]:
    tag = f"w8_{kind}_{mode}_{int(time.time())}"
    db_url = _fresh(server, pg, kind, tmp, tag)
    log = os.path.join(tmp, f"{tag}.log")
    env = _env(server.url, db_url, log)
    recorder = _start_recorder(server.url, db_url, env) if mode == "live" else None
    t_enqueue = time.time()
    asyncio.run(_enqueue(server.url, n))
    worker = spawn_worker([sys.executable, os.path.join(HERE, "asyncsched_worker.py")], env)
    try:
        _wait_log(log, n, timeout=1800)
    except BaseException:
        if recorder is not None:  # (its Redis goes with the harness: never leave it retrying)
            stop_worker(recorder, grace=30)
        raise
    finally:
        stop_worker(worker)
    first, last, runs_ok = _joblog(log, n)
    t_rec_start = time.time()
    if recorder is None:
        recorder = _start_recorder(server.url, db_url, env)
        t_rec_start = time.time()
    cpu_start = _cpu(recorder.pid) if mode == "catchup" else 0.0
    try:
        recorded_at = _wait_recorded(server.url, timeout=900)
        cpu = _cpu(recorder.pid) - cpu_start
    finally:
        stop_worker(recorder, grace=30)
    check = asyncio.run(_check_sql(db_url, n))
    lost = asyncio.run(_lost(server.url))
    out: dict[str, Any] = {
        "db": kind, "mode": mode, "n": n, "worker_jobs_per_s": round(n / (last - first)),
        "runs_ok": runs_ok, "lost": lost, **check,
    }  # fmt: skip
    if mode == "live":
        out["lag_s"] = round(max(0.0, recorded_at - last), 2)
        out["recorder_rows_per_s"] = round(n / (recorded_at - t_enqueue))
    else:
        out["recorder_rows_per_s"] = round(n / (recorded_at - t_rec_start))
        out["recorder_records_per_s"] = round(3 * n / (recorded_at - t_rec_start))
        out["recorder_cpu_s"] = round(cpu, 2)
        out["rows_per_recorder_cpu_s"] = round(n / cpu) if cpu else None
    out["valid"] = bool(runs_ok and check["ok"] and lost == 0)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "recorder":
        asyncio.run(_recorder_main(sys.argv[2], sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--db", choices=("postgresql", "sqlite", "both"), default="both")
    parser.add_argument("--mode", choices=("live", "catchup", "both"), default="both")
    opts = parser.parse_args()
    from tests.servers import postgres_server, redis_server

    kinds = ("postgresql", "sqlite") if opts.db == "both" else (opts.db,)
    modes = ("live", "catchup") if opts.mode == "both" else (opts.mode,)
    with tempfile.TemporaryDirectory() as tmp, redis_server() as server, postgres_server() as pg:
        os.chmod(tmp, 0o777)
        for kind in kinds:
            for mode in modes:
                print(json.dumps(run_cell(server, pg, kind, opts.n, mode, tmp)), flush=True)


if __name__ == "__main__":
    main()
