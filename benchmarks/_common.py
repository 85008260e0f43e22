"""What every library runner shares: the workloads' procedure, process monitoring and Redis accounting.

A runner (``peers/<lib>_bench.py``) runs in the library's own venv and implements a small adapter
(:class:`Adapter`: how to enqueue one job, how to enqueue in bulk, which command starts the recommended
worker). :func:`main` then runs one workload once and prints one JSON line. Only the standard library and
redis-py are used here, so the same file works in the project venv and in the peers' venv.

Measurement rules (the same for every library):

* Jobs write one line per execution to a log file (``_joblog.record``); the run is valid only when the
  log holds exactly N executions of N distinct job numbers: every cell, W1 bulk included (its jobs are
  drained after the timed enqueue, and must each run once).
* Drain throughput is N divided by the span from the first job's start to the last job's end, read from
  that log; worker start-up (interpreter, imports) is reported separately as ``startup_s``.
* Redis commands are the delta of ``INFO commandstats`` (minus the harness's own INFO calls) over the
  enqueue phase and over the worker phase, divided by N.
* Memory is read from ``/proc/<pid>/status`` of every process in the worker's tree every 50 ms; peak RSS is
  the largest ``VmHWM`` of one process (the process that runs the jobs), idle RSS its ``VmRSS`` after one
  warm-up job, before the measured load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------- processes
def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(p) for p in fh.read().split())
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(_children(p))
    return tree


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its live children (PostgreSQL: the postmaster and its
    backends); a process that is gone counts 0."""
    return sum(_cpu_seconds(p) for p in process_tree(pid))


class Monitor:
    """Samples memory and CPU of a process tree every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.hwm_kb: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        for p in process_tree(self.pid):
            hwm = _status_kb(p, "VmHWM:")
            if hwm:
                self.hwm_kb[p] = max(self.hwm_kb.get(p, 0), hwm)
            cpu = _cpu_seconds(p)
            if cpu:
                self.cpu[p] = cpu

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def rss_now_mb(self) -> float:
        """Current RSS of the largest process of the tree."""
        return max((_status_kb(p, "VmRSS:") for p in process_tree(self.pid)), default=0) / 1024

    def peak_mb(self) -> float:
        return max(self.hwm_kb.values(), default=0) / 1024

    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


def spawn_worker(cmd: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(env["BENCH_LOG"] + ".worker-output", "wb") as errlog:  # the worker keeps its own copy
        return subprocess.Popen(
            list(cmd), cwd=HERE, env=env, stdout=errlog, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_worker(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM (each library's graceful stop), then SIGKILL the worker's process group after ``grace``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # reap leftovers of the group (e.g. pool children), never anything else
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def worker_output_tail(log: str, n: int = 2000) -> str:
    try:
        with open(log + ".worker-output", "rb") as fh:
            data = fh.read()
        return data[-n:].decode(errors="replace")
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------ job log
class LogWatcher:
    """Counts lines appended to the job log without re-reading it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines = 0
        self._offset = 0

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return self.lines
        # only count complete lines
        end = data.rfind(b"\n") + 1
        self.lines += data.count(b"\n", 0, end)
        self._offset += end
        return self.lines

    def wait_for(
        self, n: int, proc: subprocess.Popen[bytes] | None, stall: float = 45.0, poll: float = 0.01
    ) -> bool:
        """Wait until ``n`` lines exist; False if no progress for ``stall`` s or the worker died."""
        last, last_change = self.poll(), time.monotonic()
        while last < n:
            time.sleep(poll)
            cur = self.poll()
            if cur != last:
                last, last_change = cur, time.monotonic()
            elif time.monotonic() - last_change > stall:
                return False
            if proc is not None and proc.poll() is not None and self.poll() < n:
                return False
        return True


def read_log(path: str) -> list[tuple[int, float, float, float]]:
    rows = []
    try:
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 4:
                    rows.append((int(parts[0]), float(parts[1]), float(parts[2]), float(parts[3])))
    except FileNotFoundError:
        pass
    return rows


def check(rows: list[tuple[int, float, float, float]], expected: set[int]) -> dict[str, Any]:
    ids = [r[0] for r in rows]
    unique = set(ids)
    ok = len(ids) == len(expected) and unique == expected
    return {
        "valid": ok,
        "executions": len(ids),
        "unique": len(unique),
        "expected": len(expected),
        "missing": len(expected - unique),
        "duplicates": len(ids) - len(unique),
    }


# ---------------------------------------------------------------------------------------------- redis
def commandstats(r: redis.Redis) -> dict[str, int]:
    info = r.info("commandstats")
    out = {}
    for key, val in info.items():
        name = key.removeprefix("cmdstat_")
        calls = val["calls"] if isinstance(val, dict) else 0
        out[name] = int(calls)
    return out


def redis_cpu(r: redis.Redis) -> float:
    """CPU seconds the redis-server process has used (user + sys)."""
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
    delta.pop("info", None)  # our own snapshots
    delta.pop("flushall", None)
    return dict(sorted(delta.items(), key=lambda kv: -kv[1]))


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ---------------------------------------------------------------------------------------------- adapter
class Adapter:
    """One library, as its users would drive it. Subclasses fill in the blanks."""

    name = "?"
    #: the producer API is synchronous (rq): W1/W4 enqueue from one thread, no coroutines
    sync_producer = False
    #: distribution name whose version is reported
    dist = "?"

    def __init__(self, url: str, opts: argparse.Namespace) -> None:
        self.url = url
        self.opts = opts

    # async producers
    async def open(self) -> None:
        """Connect the producer."""

    async def close(self) -> None:
        """Disconnect the producer."""

    async def enqueue(self, func: str, i: int, t: float = 0.0) -> None:
        """Enqueue ``func`` (``noop``, ``sleepy``, ``sync_noop``) for job number ``i``, single API."""
        raise NotImplementedError

    async def enqueue_bulk(self, func: str, n: int) -> None:
        """Enqueue jobs 0..n-1 via the library's bulk API."""
        raise NotImplementedError

    async def queued(self) -> int:
        """Jobs waiting in the queue, by the library's own API."""
        raise NotImplementedError

    # sync producers (rq)
    def enqueue_sync(self, func: str, i: int, t: float = 0.0) -> None:
        raise NotImplementedError

    def worker_cmd(self, workload: str) -> list[str]:
        """The command line of the library's recommended worker for this workload."""
        raise NotImplementedError

    def worker_env(self, workload: str) -> dict[str, str]:
        return {}

    def config(self, workload: str) -> dict[str, Any]:
        """What to print in the report's configuration section for this library."""
        return {}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# ---------------------------------------------------------------------------------------------- workloads
async def _enqueue_concurrently(adapter: Adapter, func: str, ids: Sequence[int], concurrency: int) -> None:
    it = iter(ids)

    async def pump() -> None:
        for i in it:
            await adapter.enqueue(func, i)

    await asyncio.gather(*(pump() for _ in range(concurrency)))


def _producer_enqueue(adapter: Adapter, func: str, n: int, concurrency: int) -> float:
    """Enqueue jobs 0..n-1 with the single API; returns seconds taken."""
    if adapter.sync_producer:
        t0 = time.perf_counter()
        for i in range(n):
            adapter.enqueue_sync(func, i)
        return time.perf_counter() - t0

    async def go() -> float:
        await adapter.open()
        try:
            t0 = time.perf_counter()
            await _enqueue_concurrently(adapter, func, range(n), concurrency)
            return time.perf_counter() - t0
        finally:
            await adapter.close()

    return asyncio.run(go())


def _env(adapter: Adapter, workload: str, log: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BENCH_LOG=log,
        BENCH_REDIS_URL=adapter.url,
        BENCH_CONCURRENCY=str(adapter.opts.concurrency),
        PYTHONPATH=HERE + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    env.update(adapter.worker_env(workload))
    return env


def run_drain(adapter: Adapter, workload: str, func: str, n: int, tmp: str) -> dict[str, Any]:
    """W2/W3/W7 (and W1 single enqueue): enqueue N with the single API, then one worker drains them."""
    r = redis.Redis.from_url(adapter.url)
    r.flushall()
    log = os.path.join(tmp, "jobs.log")
    c0, cpu0 = commandstats(r), redis_cpu(r)
    enqueue_s = _producer_enqueue(adapter, func, n, adapter.opts.concurrency)
    c1, cpu1 = commandstats(r), redis_cpu(r)
    t_spawn = time.time()
    proc = spawn_worker(adapter.worker_cmd(workload), _env(adapter, workload, log))
    watcher = LogWatcher(log)
    with Monitor(proc.pid) as mon:
        finished = watcher.wait_for(n, proc)
        time.sleep(0.5)  # anything run twice shows up now
        c2, cpu2 = commandstats(r), redis_cpu(r)
        mon.sample()
        cpu = mon.cpu_seconds()
        stop_worker(proc)
    rows = read_log(log)
    result = check(rows, set(range(n)))
    if not finished:
        result["valid"] = False
        result["error"] = "worker stalled or died; output tail:\n" + worker_output_tail(log)
    if rows:
        first = min(r_[1] for r_ in rows)
        last = max(r_[2] for r_ in rows)
        span = max(last - first, 1e-9)
        result.update(
            drain_jobs_per_s=n / span,
            drain_s=span,
            startup_s=first - t_spawn,
        )
    result.update(
        n=n,
        enqueue_jobs_per_s=n / enqueue_s,
        enqueue_s=enqueue_s,
        enqueue_cmds_per_job=sum(command_delta(c0, c1).values()) / n,
        worker_cmds_per_job=sum(command_delta(c1, c2).values()) / n,
        worker_commands=command_delta(c1, c2),
        enqueue_redis_cpu_us_per_job=(cpu1 - cpu0) * 1e6 / n,
        worker_redis_cpu_us_per_job=(cpu2 - cpu1) * 1e6 / n,
        enqueue_commands=command_delta(c0, c1),
        peak_rss_mb=mon.peak_mb(),
        worker_cpu_s=cpu,
    )
    r.close()
    return result


def drain_and_check(adapter: Adapter, n: int, tmp: str, workload: str = "W2") -> dict[str, Any]:
    """Run the jobs 0..n-1 already queued with the library's worker: the :func:`check` of what ran."""
    log = os.path.join(tmp, "drain-check.log")
    proc = spawn_worker(adapter.worker_cmd(workload), _env(adapter, workload, log))
    try:
        finished = LogWatcher(log).wait_for(n, proc)
        time.sleep(0.5)  # anything run twice shows up now
    finally:
        stop_worker(proc)
    result = check(read_log(log), set(range(n)))
    if not finished:
        result["valid"] = False
        result["error"] = "worker stalled or died; output tail:\n" + worker_output_tail(log)
    return result


def run_bulk(adapter: Adapter, n: int, tmp: str) -> dict[str, Any]:
    """W1 bulk: enqueue N via the bulk API (timed). Valid when the library reports N queued jobs and a
    worker then runs each of the N jobs exactly once (the drain is not part of the measurement)."""
    r = redis.Redis.from_url(adapter.url)
    r.flushall()
    c0 = commandstats(r)

    async def go() -> tuple[float, int]:
        await adapter.open()
        try:
            t0 = time.perf_counter()
            await adapter.enqueue_bulk("noop", n)
            dt = time.perf_counter() - t0
            return dt, await adapter.queued()
        finally:
            await adapter.close()

    dt, queued = asyncio.run(go())
    c1 = commandstats(r)
    r.close()
    result = drain_and_check(adapter, n, tmp)
    if queued != n:
        result["valid"] = False
        result.setdefault("error", f"the library reports {queued} queued jobs after a bulk enqueue of {n}")
    result.update(
        n=n,
        queued=queued,
        bulk_jobs_per_s=n / dt,
        enqueue_cmds_per_job=sum(command_delta(c0, c1).values()) / n,
        enqueue_commands=command_delta(c0, c1),
    )
    return result


def run_latency(adapter: Adapter, n: int, tmp: str, interval: float = 0.005) -> dict[str, Any]:
    """W4: a running worker; one job every ``interval`` s; enqueue→start percentiles."""
    r = redis.Redis.from_url(adapter.url)
    r.flushall()
    log = os.path.join(tmp, "jobs.log")
    proc = spawn_worker(adapter.worker_cmd("W4"), _env(adapter, "W4", log))
    watcher = LogWatcher(log)
    result: dict[str, Any] = {}
    with Monitor(proc.pid) as mon:

        def produce_sync() -> None:
            adapter.enqueue_sync("noop", -1, time.time())
            if not watcher.wait_for(1, proc, stall=60):
                raise RuntimeError("worker never ran the warm-up job:\n" + worker_output_tail(log))
            result["idle_rss_mb"] = mon.rss_now_mb()
            time.sleep(0.5)
            t0 = time.perf_counter()
            for i in range(n):
                delay = t0 + i * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                adapter.enqueue_sync("noop", i, time.time())

        async def produce_async() -> None:
            await adapter.open()
            try:
                await adapter.enqueue("noop", -1, time.time())
                ok = await asyncio.to_thread(watcher.wait_for, 1, proc, 60)
                if not ok:
                    raise RuntimeError("worker never ran the warm-up job:\n" + worker_output_tail(log))
                result["idle_rss_mb"] = mon.rss_now_mb()
                await asyncio.sleep(0.5)
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                for i in range(n):
                    delay = t0 + i * interval - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await adapter.enqueue("noop", i, time.time())
            finally:
                await adapter.close()

        try:
            if adapter.sync_producer:
                produce_sync()
            else:
                asyncio.run(produce_async())
            finished = watcher.wait_for(n + 1, proc)
            time.sleep(0.5)
        except RuntimeError as exc:
            finished = False
            result["error"] = str(exc)
        stop_worker(proc)
    rows = read_log(log)
    result.update(check(rows, set(range(-1, n))))
    if not finished:
        result["valid"] = False
        result.setdefault("error", "worker stalled or died:\n" + worker_output_tail(log))
    lat = [(start - enq) * 1000 for i, start, _end, enq in rows if i >= 0]
    result.update(
        n=n,
        p50_ms=percentile(lat, 0.50),
        p95_ms=percentile(lat, 0.95),
        p99_ms=percentile(lat, 0.99),
        max_ms=max(lat, default=float("nan")),
        peak_rss_mb=mon.peak_mb(),
    )
    r.close()
    return result


WORKLOADS: dict[str, Callable[..., dict[str, Any]]] = {}


def main(
    adapter_cls: type[Adapter], extra: Callable[[Adapter, str, int, str], dict[str, Any]] | None = None
) -> None:
    """Parse the runner's command line, run one workload once, print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("workload")
    parser.add_argument("--redis", required=True)
    parser.add_argument("-n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--variant", default="")
    opts = parser.parse_args()
    # task modules that build their client at import read these (in the runner and in the worker)
    os.environ["BENCH_REDIS_URL"] = opts.redis
    os.environ["BENCH_CONCURRENCY"] = str(opts.concurrency)
    adapter = adapter_cls(opts.redis, opts)
    tmp = tempfile.mkdtemp(prefix=f"bench-{adapter.name}-")
    t0 = time.time()
    try:
        if opts.workload == "W2":
            res = run_drain(adapter, "W2", "noop", opts.n, tmp)
        elif opts.workload == "W3":
            res = run_drain(adapter, "W3", "sleepy", opts.n, tmp)
        elif opts.workload == "W7":
            res = run_drain(adapter, "W7", "sync_noop", opts.n, tmp)
        elif opts.workload == "W1bulk":
            res = run_bulk(adapter, opts.n, tmp)
        elif opts.workload == "W4":
            res = run_latency(adapter, opts.n, tmp)
        elif extra is not None:
            res = extra(adapter, opts.workload, opts.n, tmp)
        else:
            raise SystemExit(f"unknown workload {opts.workload}")
    except Exception as exc:  # a crashed cell is reported as INVALID, not as a crashed harness
        import traceback

        res = {"valid": False, "error": f"{exc!r}\n{traceback.format_exc()[-1500:]}"}
    res.update(
        lib=adapter.name,
        version=_version(adapter.dist),
        workload=opts.workload,
        config=adapter.config(opts.workload),
        wall_s=time.time() - t0,
        python=sys.version.split()[0],
        redis_py=_version("redis"),
    )
    print("BENCH-RESULT " + json.dumps(res, default=str), flush=True)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)
