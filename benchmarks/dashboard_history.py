"""The dashboard with a large history: N execution rows (default 100,000) bulk-inserted into the database,
``asyncsched run`` serving the dashboard, headless Chromium measuring what an operator waits for.

    python benchmarks/dashboard_history.py            # 100,000 rows on PostgreSQL (a throwaway server)
    python benchmarks/dashboard_history.py --db sqlite --n 20000
    python benchmarks/dashboard_history.py --json out.json

Measured in the browser (``performance.now()``, median of ``--repeat`` runs each):

* ``page_load_ms``: navigation start -> the history's first page shown with its total ("1-25 of N");
* ``next_page_ms``: the "next page" button -> page 2 shown; ``last_page_ms``: a jump to the last page
  (the deepest ``OFFSET``); ``filter_ms``: the status filter (``failed``) applied by the server;
* ``job_detail_ms``: a history row's job id clicked -> its details dialog with the history timeline.

Also the API alone (``GET /executions``, median of 10 requests) and, on PostgreSQL, ``EXPLAIN ANALYZE``
of the page queries, which must use the history's page indexes (no sequential scan, no sort).
Valid only when the dashboard shows exactly N rows in total (``10000+`` beyond 10,000: the count's cap).
Needs chromium (see tests/web/cdp.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.servers import free_port, postgres_server  # noqa: E402
from tests.web.cdp import Page, chromium_page  # noqa: E402

COUNT_LIMIT = 10_000  # asyncsched.store._pages.COUNT_LIMIT (the benchmark imports no private module)

STATUSES = ("success",) * 45 + ("failed",) * 4 + ("cancelled",)  # 90% success, 8% failed, 2% cancelled
RANGE = "document.getElementById('history-range').textContent"


def rows(n: int, start: datetime) -> Iterator[dict[str, Any]]:
    """N executions over the last 30 days, newest first, in 5 agents and 3 queues."""
    step = timedelta(days=30) / max(n, 1)
    for i in range(n):
        created = start - step * i
        status = STATUSES[i % len(STATUSES)]
        yield {
            "id": uuid.uuid4().hex,
            "job_id": f"bench-{i:07d}",
            "agent_name": f"agent-{i % 5}",
            "task_name": f"task-{i % 20}",
            "function": "app.jobs:work",
            "queue": ("default", "high", "low")[i % 3],
            "status": status,
            "attempt": 1,
            "worker_name": "worker-1",
            "enqueued_at": created,
            "started_at": created,
            "ended_at": created + timedelta(milliseconds=20),
            "duration": 0.02,
            "result": {"i": i} if status == "success" else None,
            "error": "ValueError: bench" if status == "failed" else None,
            "traceback": "Traceback (most recent call last):\nValueError: bench"
            if status == "failed"
            else None,
            "created_at": created,
            "updated_at": created,
        }


async def load(database_url: str, n: int) -> float:
    """Create the schema and bulk-insert N rows; returns the seconds it took."""
    from sqlalchemy import insert

    from asyncsched.store import Database, TaskExecution

    began = time.monotonic()
    async with Database(database_url) as db:
        await db.migrate()
        batch: list[dict[str, Any]] = []
        async with db.engine.begin() as conn:
            for row in rows(n, datetime.now(UTC)):
                batch.append(row)
                if len(batch) == 5000:
                    await conn.execute(insert(TaskExecution), batch)
                    batch = []
            if batch:
                await conn.execute(insert(TaskExecution), batch)
            if database_url.startswith("postgresql"):
                from sqlalchemy import text

                await conn.execute(text("ANALYZE asyncsched_task_executions"))
    return time.monotonic() - began


async def explain(database_url: str) -> dict[str, str]:
    """The plans of the dashboard's history queries (PostgreSQL): first page, deep page, filter, count."""
    import asyncpg

    dsn = database_url.replace("postgresql+asyncpg", "postgresql")
    order = "ORDER BY created_at DESC, job_id DESC, attempt DESC"
    queries = {
        "first page": f"SELECT * FROM asyncsched_task_executions {order} LIMIT 25",
        "last page": f"SELECT * FROM asyncsched_task_executions {order} LIMIT 25 OFFSET 99975",
        "status filter": f"SELECT * FROM asyncsched_task_executions WHERE status = 'failed' {order} LIMIT 25",
        "count": "SELECT count(*) FROM asyncsched_task_executions",
        "capped count": (  # as the store counts a page for display (up to 10,000 rows, + 1)
            "SELECT count(*) FROM (SELECT created_at, job_id, attempt FROM asyncsched_task_executions"
            " LIMIT 10001) AS page"
        ),
        "job timeline": (
            "SELECT * FROM asyncsched_task_executions WHERE job_id = 'bench-0000042' ORDER BY attempt"
        ),
    }
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for name, sql in queries.items():
            plan = await conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}")
            out[name] = "\n".join(r[0] for r in plan)
        return out
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def served(database_url: str) -> AsyncIterator[str]:
    """``asyncsched run`` (embedded Redis) on the database; yields the API's base URL."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": "memory://",
        "ASYNCSCHED_LOG_LEVEL": "WARNING",
        "ASYNCSCHED_RETENTION_DAYS": "3650",  # the rows span 30 days: none may be pruned while measuring
        "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH", "")]),
    }
    workdir = tempfile.mkdtemp(prefix="asyncsched-dash-")
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncsched", "run", "--port", str(port), "--for", "900"],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/scheduler"
    try:
        import httpx

        async with httpx.AsyncClient() as client:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url + "/health")).status_code == 200:
                        break
                if proc.poll() is not None:
                    raise RuntimeError(f"asyncsched run exited with {proc.returncode}")
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def until(page: Page, condition: str, timeout_ms: int = 60000) -> float:
    """``performance.now()`` (ms since navigation) when ``condition`` first holds, polled every 5 ms."""
    return float(
        await page.evaluate(
            f"""new Promise((resolve, reject) => {{
                const deadline = performance.now() + {timeout_ms};
                const check = () => {{
                    let ok = false;
                    try {{ ok = Boolean({condition}); }} catch (err) {{ ok = false; }}
                    if (ok) return resolve(performance.now());
                    if (performance.now() > deadline) {{
                        const shown = document.getElementById("history-range").textContent + " | "
                            + document.getElementById("message").textContent;
                        return reject(new Error("timed out: " + {condition!r} + " (page: " + shown + ")"));
                    }}
                    setTimeout(check, 5);
                }};
                check();
            }})"""
        )
    )


async def timed(page: Page, action: str, condition: str) -> float:
    """Milliseconds from running ``action`` in the page to ``condition`` holding."""
    start = float(await page.evaluate(f"(() => {{ const t = performance.now(); {action}; return t; }})()"))
    return await until(page, condition) - start


async def browser(url: str, n: int) -> dict[str, float]:
    # the dashboard counts a page's total up to 10,000 rows (store COUNT_LIMIT): "10000+" beyond
    total = str(n) if n <= COUNT_LIMIT else f"{COUNT_LIMIT}+"
    first = f"{RANGE} === '1\u201325 of {total}'"
    async with chromium_page() as page:
        await page.goto(f"{url}/dashboard")
        load_ms = await until(page, first)
        next_ms = await timed(
            page, "document.getElementById('history-next').click()", f"{RANGE}.startsWith('26\u2013')"
        )
        last = n - 25 + 1 if n % 25 == 0 else n - n % 25 + 1
        last_ms = await timed(
            page,
            "historyOffset = " + str(last - 1) + "; scheduleRefresh(0)",
            f"{RANGE}.startsWith('{last}\u2013')",
        )
        failed = sum(1 for i in range(n) if STATUSES[i % len(STATUSES)] == "failed")
        filter_ms = await timed(
            page,
            "historyOffset = 0;"
            "document.querySelector('#history-filters select[name=status]').value = 'failed';"
            "document.querySelector('#history-filters button[type=submit]').click()",
            f"{RANGE} === '1\u201325 of {failed}'",
        )
        detail_ms = await timed(
            page,
            "document.querySelector('#executions tbody tr button[data-job]').click()",
            "document.getElementById('job-dialog').open && "
            "document.querySelectorAll('#job-timeline li[data-attempt]').length === 1",
        )
        return {
            "page_load_ms": load_ms,
            "next_page_ms": next_ms,
            "last_page_ms": last_ms,
            "filter_ms": filter_ms,
            "job_detail_ms": detail_ms,
        }


async def api_times(url: str, n: int) -> dict[str, float]:
    import httpx

    out: dict[str, float] = {}
    cases = {
        "api_first_page_ms": "/executions?limit=25",
        "api_last_page_ms": f"/executions?limit=25&offset={n - 25}",
        "api_status_filter_ms": "/executions?limit=25&status=failed",
    }
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for name, path in cases.items():
            samples = []
            for _ in range(10):
                began = time.monotonic()
                response = await client.get(path)
                samples.append((time.monotonic() - began) * 1000)
                response.raise_for_status()
            out[name] = statistics.median(samples)
    return out


async def run(database_url: str, n: int, repeat: int) -> dict[str, Any]:
    result: dict[str, Any] = {"n": n, "database": database_url.split(":")[0]}
    result["insert_s"] = round(await load(database_url, n), 2)
    async with served(database_url) as url:
        runs = [await browser(url, n) for _ in range(repeat)]
        for key in runs[0]:
            result[key] = round(statistics.median(r[key] for r in runs), 1)
            result[key.replace("_ms", "_max_ms")] = round(max(r[key] for r in runs), 1)
        result.update({k: round(v, 1) for k, v in (await api_times(url, n)).items()})
    if database_url.startswith("postgresql"):
        result["plans"] = await explain(database_url)
    result["load1"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="execution rows (default 100,000)")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--repeat", type=int, default=3, help="browser runs (median reported)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    if args.db == "sqlite":
        path = os.path.join(tempfile.mkdtemp(prefix="asyncsched-dash-db-"), "history.db")
        result = asyncio.run(run(f"sqlite+aiosqlite:///{path}", args.n, args.repeat))
    else:
        with postgres_server() as server:
            result = asyncio.run(run(server.dsn, args.n, args.repeat))
    plans = result.pop("plans", {})
    for name, plan in plans.items():
        print(f"-- EXPLAIN ANALYZE: {name}\n{plan}\n")
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**result, "plans": plans}, f, indent=2)


if __name__ == "__main__":
    main()
