"""W8: history on. N no-op jobs drained by one worker (``-c 100``) while a Recorder writes the history.

For each database (PostgreSQL, SQLite) two runs on a fresh Redis and database:

* **live**: the Recorder process runs throughout; N jobs are bulk-enqueued, then one worker drains them.
  Reported: worker jobs/s (from the jobs' own log), the history's lag (last job end -> every row final:
  the Recorder's backlog is 0), and the Recorder's rows/s from the first job's start to that moment.
* **catch-up** (the Recorder's sustained capacity): the worker drains the N jobs with no Recorder running
  (3N lifecycle records wait in Redis); then the Recorder starts and is timed until it has recorded them.
  rows/s = N execution rows / that time (records/s = 3N / time). Each of the N jobs' ``queued`` record
  precedes every start (bulk enqueue); the Recorder, behind, holds the queued rows while it reads ahead
  (``hold_behind``, ``hold_rows``), so a job is one row write here (its final row).

Both report the Recorder process' CPU (seconds, and microseconds per row: the figure that does not depend
on how busy the machine is), PostgreSQL's CPU (postmaster and backends) over the same span, and the load
average at the cell's start and end. Valid only if the jobs' log has N executions of N distinct jobs; SQL
has exactly N rows, all ``success`` with start, end and duration; EVERY execution matches its job's own
log line (its row exists once, attempt 1, its start and end bracket the job's own, duration = end -
start); and no record was lost. One JSON line per cell, then a summary in words.

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

from _common import spawn_worker, stop_worker, tree_cpu  # noqa: E402


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


async def _enqueue(url: str, n: int) -> list[str]:
    """Enqueue jobs 0..n-1 (job ``i`` logs its number ``i``); returns their job ids, in order."""
    from asyncsched.config import Settings
    from asyncsched.queue import TaskQueue

    ids: list[str] = []
    async with TaskQueue(url, settings=Settings(redis_url=url)) as queue:
        for start in range(0, n, 1000):
            ids += await queue.enqueue_many(
                [{"func": "tasks_asyncsched.noop", "args": (i,)} for i in range(start, min(n, start + 1000))]
            )
    return ids


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


def _seconds(value: Any) -> float | None:
    from datetime import UTC

    if value is None:
        return None
    return float((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())


async def _check_each(db_url: str, ids: list[str], runs: dict[int, tuple[float, float]]) -> dict[str, Any]:
    """Every execution against its job's own log line: its row exists once, ``success``, attempt 1, and
    its ``started_at``/``ended_at`` bracket the job's own start and end (within 1 ms), ``duration`` =
    end - start."""
    from sqlalchemy import select

    from asyncsched.store import Database, TaskExecution

    t = TaskExecution
    query = select(t.job_id, t.attempt, t.status, t.started_at, t.ended_at, t.duration)
    async with Database(db_url, auto_migrate=False) as db, db.engine.connect() as conn:
        rows: dict[str, list[Any]] = {}
        for job_id, *rest in (await conn.execute(query)).all():
            rows.setdefault(job_id, []).append(rest)
    bad: list[str] = []
    for i, job_id in enumerate(ids):
        found, run = rows.get(job_id, []), runs.get(i)
        why = _mismatch(found, run)
        if why:
            bad.append(f"job {i} ({job_id}): {why}")
    return {"executions_checked": len(ids), "executions_wrong": len(bad), "wrong_examples": bad[:3]}


def _mismatch(found: list[Any], run: tuple[float, float] | None) -> str:
    if run is None:
        return "no line in the jobs' log"
    if len(found) != 1:
        return f"{len(found)} rows"
    attempt, status, started, ended, duration = found[0]
    start, end = _seconds(started), _seconds(ended)
    if (attempt, status) != (1, "success") or start is None or end is None or duration is None:
        return f"row {attempt} {status} {started} {ended} {duration}"
    if start > run[0] + 1e-3 or end < run[1] - 1e-3:
        return f"row runs {start:.6f}..{end:.6f}, the job ran {run[0]:.6f}..{run[1]:.6f}"
    if abs(duration - (end - start)) > 1e-5:
        return f"duration {duration} for {end - start:.6f}"
    return ""


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


def _joblog(log: str, n: int) -> tuple[float, float, bool, dict[int, tuple[float, float]]]:
    """The jobs' own log: first start, last end, whether it has n executions of n distinct jobs, and each
    job's (start, end)."""
    runs: dict[int, tuple[float, float]] = {}
    first, last, lines = float("inf"), 0.0, 0
    with open(log) as fh:
        for line in fh:
            i, start, end, _ = line.split()
            runs[int(i)] = (float(start), float(end))
            first, last, lines = min(first, float(start)), max(last, float(end)), lines + 1
    return first, last, lines == n and len(runs) == n, runs


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


def _loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def _pg_cpu(pg: Any, kind: str) -> float:
    if kind != "postgresql":
        return 0.0
    with open(os.path.join(pg.datadir, "postmaster.pid")) as fh:
        return tree_cpu(int(fh.readline()))


def run_cell(server: Any, pg: Any, kind: str, n: int, mode: str, tmp: str) -> dict[str, Any]:
    tag = f"w8_{kind}_{mode}_{int(time.time())}"
    db_url = _fresh(server, pg, kind, tmp, tag)
    log = os.path.join(tmp, f"{tag}.log")
    env = _env(server.url, db_url, log)
    load_start = _loadavg()
    recorder = _start_recorder(server.url, db_url, env) if mode == "live" else None
    rec_cpu, pg_cpu = (_cpu(recorder.pid) if recorder else 0.0), _pg_cpu(pg, kind)
    ids = asyncio.run(_enqueue(server.url, n))
    worker = spawn_worker([sys.executable, os.path.join(HERE, "asyncsched_worker.py")], env)
    try:
        _wait_log(log, n, timeout=1800)
    except BaseException:
        if recorder is not None:  # (its Redis goes with the harness: never leave it retrying)
            stop_worker(recorder, grace=30)
        raise
    finally:
        stop_worker(worker)
    first, last, runs_ok, runs = _joblog(log, n)
    t_rec_start = time.time()
    if recorder is None:
        pg_cpu = _pg_cpu(pg, kind)
        recorder = _start_recorder(server.url, db_url, env)
        t_rec_start = time.time()
        rec_cpu = _cpu(recorder.pid)
    try:
        recorded_at = _wait_recorded(server.url, timeout=900)
        rec_cpu, pg_cpu = _cpu(recorder.pid) - rec_cpu, _pg_cpu(pg, kind) - pg_cpu
    finally:
        stop_worker(recorder, grace=30)
    check = asyncio.run(_check_sql(db_url, n))
    each = asyncio.run(_check_each(db_url, ids, runs))
    lost = asyncio.run(_lost(server.url))
    out: dict[str, Any] = {
        "db": kind, "mode": mode, "n": n, "worker_jobs_per_s": round(n / (last - first)),
        "runs_ok": runs_ok, "lost": lost, **check, **each,
    }  # fmt: skip
    if mode == "live":
        # the history is final once every row is written: from the first job's start to then
        out["lag_s"] = round(max(0.0, recorded_at - last), 2)
        out["recorder_rows_per_s"] = round(n / (recorded_at - first))
    else:
        out["recorder_rows_per_s"] = round(n / (recorded_at - t_rec_start))
        out["recorder_records_per_s"] = round(3 * n / (recorded_at - t_rec_start))
    out["recorder_cpu_s"] = round(rec_cpu, 2)
    out["recorder_cpu_us_per_row"] = round(rec_cpu / n * 1e6, 1) if rec_cpu else None
    out["postgres_cpu_s"] = round(pg_cpu, 2)
    out["loadavg_start"], out["loadavg_end"] = load_start, _loadavg()
    out["valid"] = bool(runs_ok and check["ok"] and lost == 0 and each["executions_wrong"] == 0)
    return out


def _summary(cell: dict[str, Any]) -> str:
    head = f"{cell['db']} {cell['mode']}: " + ("VALID" if cell["valid"] else "INVALID")
    parts = [
        f"worker {cell['worker_jobs_per_s']:,} jobs/s",
        f"Recorder {cell['recorder_rows_per_s']:,} rows/s wall",
        f"{cell['recorder_cpu_us_per_row']} us of Recorder CPU per row",
    ]
    if cell["mode"] == "live":
        parts.append(f"history final {cell['lag_s']} s after the last job ended")
    if cell["db"] == "postgresql":
        parts.append(f"PostgreSQL {cell['postgres_cpu_s']} CPU-s")
    parts.append(
        f"{cell['executions_checked'] - cell['executions_wrong']:,}/{cell['executions_checked']:,} "
        f"executions right in SQL, {cell['lost']} records lost"
    )
    parts.append(f"load average {cell['loadavg_start']} -> {cell['loadavg_end']}")
    return head + "; " + "; ".join(parts)


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
        cells = []
        for kind in kinds:
            for mode in modes:
                cells.append(run_cell(server, pg, kind, opts.n, mode, tmp))
                print(json.dumps(cells[-1]), flush=True)
    print(f"W8, {opts.n:,} no-op jobs, one worker (-c 100), {os.cpu_count()} CPUs:")
    for cell in cells:
        print("  " + _summary(cell))


if __name__ == "__main__":
    main()
