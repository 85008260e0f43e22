"""W6 bulk: register 100,000 interval schedules in one ``TaskScheduler.add_tasks`` call (PostgreSQL + Redis).

Starts its own redis-server and PostgreSQL (the test fixtures' servers: PostgreSQL with ``fsync=off``) and
reports, in seconds: ``validate_s`` (``build_task`` for every definition, the checks a single add makes) and
``store_s`` (``add_tasks``: the rows in one transaction, the index written, the change notice sent), each
also as CPU seconds of this process (``*_cpu_s``) and, for the store, of the PostgreSQL server processes
(``store_db_cpu_s``): on a loaded machine wall time says little, CPU seconds say what the work costs. The
load average is printed with the result. It then checks the stored rows and the index (every task indexed
once, at its first tick).

    PYTHONPATH=src python benchmarks/w6_bulk.py --n 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from tests.servers import postgres_server, redis_server  # noqa: E402

INTERVAL_S = 60


def _tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of process ``root`` and its children (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rpartition(")")[2].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree, total = {root}, 0.0
    for pid, (parent, cpu) in sorted(stats.items()):
        if pid in tree or parent in tree:
            tree.add(pid)
            total += cpu
    return total


def _postmaster(datadir: str) -> int:
    with open(os.path.join(datadir, "postmaster.pid")) as handle:
        return int(handle.readline())


async def run(redis_url: str, db_url: str, n: int, repeat: int, db_pid: int) -> dict[str, Any]:
    from sqlalchemy import func, select

    from asyncsched.config import Settings
    from asyncsched.scheduler import TaskScheduler, build_task
    from asyncsched.store import Base, ScheduledTask, create_engine

    engine = create_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    settings = Settings(redis_url=redis_url, database_url=db_url, agent="bench")
    rounds: list[dict[str, float]] = []
    async with TaskScheduler(settings=settings) as scheduler:
        for r in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            tasks = []
            for k in range(n):
                start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=k % INTERVAL_S)
                tasks.append(
                    build_task(
                        agent_name=f"bench{r}",
                        name=f"t{k}",
                        function="tasks_asyncsched:noop",
                        args=[k],
                        type="interval",
                        schedule=f"{INTERVAL_S} seconds",
                        start=start.isoformat(),
                    )
                )
            t1, c1, d1 = time.perf_counter(), time.process_time(), _tree_cpu(db_pid)
            stored = await scheduler.add_tasks(tasks)
            t2, c2, d2 = time.perf_counter(), time.process_time(), _tree_cpu(db_pid)
            assert len(stored) == n
            rounds.append(
                {
                    "validate_s": round(t1 - t0, 2),
                    "validate_cpu_s": round(c1 - c0, 2),
                    "store_s": round(t2 - t1, 2),
                    "store_cpu_s": round(c2 - c1, 2),
                    "store_db_cpu_s": round(d2 - d1, 2),
                }
            )
            print(f"round {r}: {rounds[-1]}", file=sys.stderr)
        async with engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(ScheduledTask))).scalar_one()
        indexed = await scheduler.index.redis.zcard(scheduler.index.next_key)
        first = await scheduler.index.score(stored[0])
    await engine.dispose()
    assert rows == indexed == n * repeat, (rows, indexed)
    assert first is not None
    assert first % (INTERVAL_S * 1000) == 0  # task 0 ticks on whole minutes
    store = sorted(x["store_s"] for x in rounds)
    return {
        "n": n,
        "rounds": rounds,
        "store_s_median": store[len(store) // 2],
        "rows": rows,
        "indexed": indexed,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="schedules per round (default 100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (each adds n new schedules)")
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with redis_server() as redis, postgres_server() as pg:
        result = asyncio.run(run(redis.url, pg.dsn, args.n, args.repeat, _postmaster(pg.datadir)))
    result["load_before"] = load_before
    print(json.dumps(result, indent=2))
    print(_summary(result), file=sys.stderr)


def _summary(r: dict[str, Any]) -> str:
    """The result in words, for whoever re-runs this on another machine."""
    cores = os.cpu_count() or 1
    lines = [f"W6 bulk on {cores} core(s): {r['n']} schedules per round (target: validate + store <= 10 s)"]
    for i, x in enumerate(r["rounds"]):
        wall, cpu = (
            x["validate_s"] + x["store_s"],
            x["validate_cpu_s"] + x["store_cpu_s"] + x["store_db_cpu_s"],
        )
        lines.append(
            f"  round {i}: {wall:.2f} s wall (validate {x['validate_s']} + store {x['store_s']}); "
            f"CPU {cpu:.2f} s (validate {x['validate_cpu_s']}, store {x['store_cpu_s']} here "
            f"+ {x['store_db_cpu_s']} PostgreSQL)"
        )
    lines.append(
        f"  load average (1/5/15 min) before {r['load_before']}, after {r['load_average']}. "
        f"With a load above {cores}, wall time is about CPU time x load / {cores} (the wait for a core); "
        "the CPU seconds are what registration costs, comparable across machines."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
