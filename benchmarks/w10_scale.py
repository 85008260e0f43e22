"""W10: how far one Redis goes. N no-op jobs drained by 1, 2 and 4 worker processes on one redis-server.

For each worker count, on a fresh redis-server (persistence off, as in the peer table):

* the jobs are enqueued in bulk (``enqueue_many``), then K burst workers (``python -m asyncsched.worker
  --burst``) drain them;
* **jobs/s** is N over the span from the first job's ``started_at`` to the last job's ``ended_at``, read back
  from the job hashes (worker start-up is not counted);
* **Redis CPU per job** is the delta of ``INFO cpu`` (user + system) over the enqueue phase and over the
  drain phase, divided by N; **commands per job** the delta of ``INFO commandstats``;
* **ceiling per Redis core** is what one fully busy Redis core could serve at that cost per job:
  ``1 / (enqueue + worker Redis CPU per job)`` for jobs enqueued and run with full RQ state, and
  ``1 / worker Redis CPU per job`` for running alone. That is arithmetic on the measured cost, not a
  measured rate: on a 2-core machine the workers and Redis compete for the cores, so the measured jobs/s
  stops growing long before Redis is saturated.

**Cluster cell** (``--cluster-workers K``, 0: none): the same on a Redis Cluster of three masters and three
replicas (``tests/servers.py``'s rig) with three queues, one per master; the jobs spread evenly over the
queues, K burst workers listen on all three. Redis CPU per job is given **per shard**: each master's CPU
delta over the jobs of its queue (replicas not counted), beside the cluster's total per job.

    python benchmarks/w10_scale.py [--n 40000] [--workers 1,2,4] [--concurrency 100] [--cluster-workers 2]

Prints one line per cell and one ``BENCH-RESULT`` JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ISO = "%Y-%m-%dT%H:%M:%S.%fZ"


async def noop() -> None:
    """The job (imported by the workers as ``w10_scale:noop``)."""


CLUSTER_QUEUES = ("alpha", "delta", "beta")  # hash slots 865, 9053, 15419: one queue per master


async def _enqueue(url: str, n: int, queues: tuple[str, ...] = ("default",)) -> list[str]:
    from asyncsched.config import Settings
    from asyncsched.queue import TaskQueue

    async with TaskQueue(url, settings=Settings(redis_url=url)) as q:
        ids: list[str] = []
        for start in range(0, n, 5000):
            chunk = min(5000, n - start)
            specs = [{"func": "w10_scale:noop", "queue": queues[i % len(queues)]} for i in range(chunk)]
            ids += await q.enqueue_many(specs)
        return ids


def _redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _calls(r: redis.Redis) -> int:
    return sum(int(v["calls"]) for v in r.info("commandstats").values())


def _span(r: Any, ids: list[str]) -> tuple[float, int]:
    """(first start to last end in seconds, jobs that finished) from the job hashes."""
    first, last, done = float("inf"), 0.0, 0
    for start in range(0, len(ids), 5000):
        with r.pipeline(transaction=False) as pipe:
            for job_id in ids[start : start + 5000]:
                pipe.hmget(f"rq:job:{job_id}", ["started_at", "ended_at"])
            for started, ended in pipe.execute():
                if started and ended:
                    done += 1
                    first = min(first, datetime.strptime(started.decode(), ISO).timestamp())
                    last = max(last, datetime.strptime(ended.decode(), ISO).timestamp())
    return max(last - first, 1e-9), done


def cell(workers: int, n: int, concurrency: int) -> dict[str, Any]:
    from tests.servers import redis_server

    with redis_server() as srv:
        r = redis.Redis.from_url(srv.url)
        cpu0, calls0 = _redis_cpu(r), _calls(r)
        ids = asyncio.run(_enqueue(srv.url, n))
        cpu1, calls1 = _redis_cpu(r), _calls(r)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.path.join(ROOT, "src")])}
        cmd = [sys.executable, "-m", "asyncsched.worker", "--redis-url", srv.url, "--no-scheduler", "--burst"]
        cmd += ["-c", str(concurrency)]
        t0 = time.monotonic()
        null = subprocess.DEVNULL
        procs = [subprocess.Popen(cmd, cwd=HERE, env=env, stdout=null, stderr=null) for _ in range(workers)]
        for proc in procs:
            proc.wait(900)
        wall = time.monotonic() - t0
        cpu2, calls2 = _redis_cpu(r), _calls(r)
        span, done = _span(r, ids)
        r.close()
    enq_us = (cpu1 - cpu0) / n * 1e6
    work_us = (cpu2 - cpu1) / n * 1e6
    return {
        "workers": workers,
        "n": n,
        "done": done,
        "jobs_per_s": round(n / span, 1),
        "wall_s": round(wall, 2),
        "enqueue_redis_cpu_us_per_job": round(enq_us, 2),
        "worker_redis_cpu_us_per_job": round(work_us, 2),
        "enqueue_cmds_per_job": round((calls1 - calls0) / n, 2),
        "worker_cmds_per_job": round((calls2 - calls1) / n, 2),
        "redis_core_ceiling_jobs_per_s": round(1e6 / (enq_us + work_us)),
        "redis_core_ceiling_run_only_jobs_per_s": round(1e6 / work_us),
        "load1": os.getloadavg()[0],
        "valid": done == n,
    }


def _worker_cmd(url: str, concurrency: int, *queues: str) -> list[str]:
    cmd = [sys.executable, "-m", "asyncsched.worker", "--redis-url", url, "--no-scheduler", "--burst"]
    return [*cmd, "-c", str(concurrency), *queues]


def cluster_cell(workers: int, n: int, concurrency: int) -> dict[str, Any]:
    """The cell on a 3-master cluster with 3 queues (see the module docstring)."""
    from tests.servers import cluster_setup

    from asyncsched._redis.connection import create_sync_redis

    with cluster_setup() as rig:
        rig.wait_ready()
        masters = [redis.Redis(port=port) for port in rig.masters()]
        client: Any = create_sync_redis(rig.url)
        owner = {q: client.get_node_from_key("{" + q + "}").port for q in CLUSTER_QUEUES}
        cpu0 = [_redis_cpu(m) for m in masters]
        ids = asyncio.run(_enqueue(rig.url, n, CLUSTER_QUEUES))
        cpu1 = [_redis_cpu(m) for m in masters]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.path.join(ROOT, "src")])}
        cmd, null = _worker_cmd(rig.url, concurrency, *CLUSTER_QUEUES), subprocess.DEVNULL
        t0 = time.monotonic()
        procs = [subprocess.Popen(cmd, cwd=HERE, env=env, stdout=null, stderr=null) for _ in range(workers)]
        for proc in procs:
            proc.wait(900)
        wall = time.monotonic() - t0
        cpu2 = [_redis_cpu(m) for m in masters]
        span, done = _span(client, ids)
        ports = [m.connection_pool.connection_kwargs["port"] for m in masters]
        for m in masters:
            m.close()
        client.close()
    per_queue = n / len(CLUSTER_QUEUES)
    shards = {
        q: {
            "enqueue_us": round((cpu1[ports.index(p)] - cpu0[ports.index(p)]) / per_queue * 1e6, 2),
            "worker_us": round((cpu2[ports.index(p)] - cpu1[ports.index(p)]) / per_queue * 1e6, 2),
        }
        for q, p in owner.items()
    }
    enq_us, work_us = (sum(b) - sum(a) for a, b in ((cpu0, cpu1), (cpu1, cpu2)))
    return {
        "cluster": "3 masters + 3 replicas, 3 queues",
        "workers": workers,
        "n": n,
        "done": done,
        "jobs_per_s": round(n / span, 1),
        "wall_s": round(wall, 2),
        "redis_cpu_us_per_job_per_shard": shards,
        "enqueue_redis_cpu_us_per_job": round(enq_us / n * 1e6, 2),
        "worker_redis_cpu_us_per_job": round(work_us / n * 1e6, 2),
        "load1": os.getloadavg()[0],
        "valid": done == n and len(set(owner.values())) == 3,
    }


def _print_cluster(c: dict[str, Any]) -> None:
    per_shard = c["redis_cpu_us_per_job_per_shard"]
    shards = ", ".join(f"{q} {v['enqueue_us']:.1f} + {v['worker_us']:.1f} µs" for q, v in per_shard.items())
    print(
        f"cluster, {c['workers']} worker(s): {c['jobs_per_s']:9.0f} jobs/s; Redis CPU/job per shard "
        f"(enqueue + worker): {shards}; cluster total {c['enqueue_redis_cpu_us_per_job']:.1f} + "
        f"{c['worker_redis_cpu_us_per_job']:.1f} µs; load {c['load1']:.2f}"
        f"{'' if c['valid'] else '  INVALID: ' + str(c['done']) + ' done'}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=40000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=100, help="-c of each worker")
    parser.add_argument("--cluster-workers", type=int, default=2, help="the cluster cell's workers (0: none)")
    opts = parser.parse_args()
    sys.path[:0] = [os.path.join(ROOT, "src"), ROOT]  # this checkout's asyncsched, and its test rig
    cells = []
    for k in (int(x) for x in opts.workers.split(",") if x):
        c = cell(k, opts.n, opts.concurrency)
        cells.append(c)
        print(
            f"{k} worker(s): {c['jobs_per_s']:9.0f} jobs/s; Redis CPU/job enqueue "
            f"{c['enqueue_redis_cpu_us_per_job']:.1f} µs + worker {c['worker_redis_cpu_us_per_job']:.1f} µs; "
            f"cmds/job {c['enqueue_cmds_per_job']} + {c['worker_cmds_per_job']}; one Redis core's ceiling "
            f"{c['redis_core_ceiling_jobs_per_s']} jobs/s ({c['redis_core_ceiling_run_only_jobs_per_s']} run "
            f"only); load {c['load1']:.2f}{'' if c['valid'] else '  INVALID: ' + str(c['done']) + ' done'}",
            flush=True,
        )
    if opts.cluster_workers:
        c = cluster_cell(opts.cluster_workers, opts.n, opts.concurrency)
        cells.append(c)
        _print_cluster(c)
    print("BENCH-RESULT " + json.dumps({"cells": cells, "valid": all(c["valid"] for c in cells)}))


if __name__ == "__main__":
    main()
