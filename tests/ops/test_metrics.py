"""Per-process metrics: what a worker and a scheduler observe, the label bound, and ``--metrics-port`` on
the real ``asyncsched worker`` and ``asyncsched scheduler`` processes."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from asyncsched import _metrics
from asyncsched._metrics import ProcessMetrics, count_rate_limit_waits
from asyncsched.config import Settings
from asyncsched.events import Event, EventBus
from asyncsched.queue import RateLimit, Retry, TaskQueue
from asyncsched.rq import codec
from asyncsched.worker import Worker
from asyncsched.worker._job import ClaimedJob, Outcome
from tests import jobs
from tests.servers import free_port
from tests.waiting import eventually
from tests.web.procs import Process, clean_env

from .conftest import ROOT


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample line of an exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def test_worker_observes_wait_run_and_outcomes(queue: TaskQueue, ops_settings: Settings) -> None:
    for i in range(3):
        await queue.enqueue(jobs.add, args=(i, i), queue="m")
    await queue.enqueue(jobs.fail, queue="m")
    await queue.enqueue(jobs.fail, queue="m", retry=Retry(max=1))
    metrics = ProcessMetrics()
    async with Worker(["m"], settings=ops_settings, burst=True) as worker:
        worker.metrics = metrics
        await worker.run()
    text = await metrics.render(queue.redis, ops_settings.key_prefix)
    got = samples(text)
    add = 'queue="m",function="tests.jobs.add"'
    fail = 'queue="m",function="tests.jobs.fail"'
    assert got[f'asyncsched_jobs_total{{{add},outcome="success"}}'] == 3
    assert got[f'asyncsched_jobs_total{{{fail},outcome="failed"}}'] == 2
    assert got[f'asyncsched_jobs_total{{{fail},outcome="retry"}}'] == 1
    assert got[f"asyncsched_job_retries_total{{{fail}}}"] == 1
    assert got[f"asyncsched_job_wait_seconds_count{{{add}}}"] == 3
    assert got[f'asyncsched_job_wait_seconds_bucket{{{add},le="+Inf"}}'] == 3
    assert got[f"asyncsched_job_run_seconds_count{{{fail}}}"] == 3
    assert 0 <= got[f"asyncsched_job_wait_seconds_sum{{{add}}}"] < 60
    assert "# TYPE asyncsched_job_wait_seconds histogram" in text
    assert "asyncsched_scheduler_ticks_overdue 0" in text  # read from Redis


def _outcome(queue: str, description: bytes, enqueued: datetime, started: float) -> Outcome:
    h = {"description": description, "enqueued_at": codec.fmt_ts(enqueued).encode()}
    job = ClaimedJob("id", "ex", queue, h, started=started)
    return Outcome(job, "finished", ended=started + 0.2)


async def test_rq_jobs_and_the_label_bound() -> None:
    metrics = ProcessMetrics(max_functions=2)
    now = datetime.now(UTC)
    start = now.timestamp() + 1.5  # started 1.5 s after its enqueue
    metrics.observe_outcomes(
        [
            _outcome("q", b"app.jobs.one(1, 2)", now, start),  # RQ's description: the call, with arguments
            _outcome("q", b"app.jobs.one(3, 4)", now, start),
            _outcome("q", b"app.jobs.two()", now, start),
            _outcome("q", b"app.jobs.three()", now, start),
            _outcome("q", b"app.jobs.four()", now, start),
        ]
    )
    got = samples(await metrics.render())
    one = 'queue="q",function="app.jobs.one"'
    assert got[f"asyncsched_job_run_seconds_count{{{one}}}"] == 2
    assert got[f'asyncsched_job_wait_seconds_bucket{{{one},le="1"}}'] == 0
    assert got[f'asyncsched_job_wait_seconds_bucket{{{one},le="2.5"}}'] == 2
    assert abs(got[f"asyncsched_job_wait_seconds_sum{{{one}}}"] - 3.0) < 0.01
    assert got['asyncsched_job_run_seconds_count{queue="q",function="other"}'] == 2
    functions = {k.split('function="')[1].split('"')[0] for k in got if 'function="' in k}
    assert functions == {"app.jobs.one", "app.jobs.two", "other"}


async def test_scheduler_observes_tick_lag() -> None:
    metrics = ProcessMetrics()
    tick = datetime(2026, 1, 1, tzinfo=UTC)
    metrics.observe_tick(tick, (tick + timedelta(seconds=0.3)).timestamp())
    got = samples(await metrics.render(worker=False))
    assert got["asyncsched_scheduler_ticks_total"] == 1
    assert got['asyncsched_scheduler_tick_lag_seconds_bucket{le="0.25"}'] == 0
    assert got['asyncsched_scheduler_tick_lag_seconds_bucket{le="0.5"}'] == 1


async def _scrape(url: str, want: str) -> str | None:
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(url, timeout=5)
    except httpx.HTTPError:
        return None
    return response.text if want in response.text else None


async def test_metrics_port_of_worker_and_scheduler(
    queue: TaskQueue, ops_settings: Settings, tmp_path: Path
) -> None:
    env = {**clean_env(), "REDIS_URL": ops_settings.redis_url, "DATABASE_URL": ops_settings.database_url}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    (tmp_path / "tasks.yaml").write_text(
        textwrap.dedent(
            """
            tasks:
              - name: tick
                type: interval
                schedule: "1 second"
                function: "tests.jobs:none"
            """
        )
    )
    wport, sport = free_port(), free_port()
    worker = Process(
        [sys.executable, "-m", "asyncsched", "worker", "m", "--metrics-port", str(wport)], ROOT, env
    )
    scheduler = Process(
        [sys.executable, "-m", "asyncsched", "scheduler", "--tasks", str(tmp_path / "tasks.yaml"),
         "--metrics-port", str(sport)],
        ROOT, env,
    )  # fmt: skip
    try:
        await queue.enqueue(jobs.add, args=(1, 1), queue="m")
        want = 'asyncsched_jobs_total{queue="m",function="tests.jobs.add",outcome="success"} 1'
        text = await eventually(
            lambda: _scrape(f"http://127.0.0.1:{wport}/metrics", want), 60, "worker metrics"
        )
        assert "asyncsched_job_wait_seconds_bucket" in text
        text = await eventually(
            lambda: _scrape(f"http://127.0.0.1:{sport}/metrics", "asyncsched_scheduler_ticks_total 1"),
            60,
            "scheduler metrics",
        )
        assert "asyncsched_scheduler_tick_lag_seconds_count" in text
        assert "asyncsched_recorder_lag_entries" in text  # the scheduler runs the recorder by default
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{wport}/other")).status_code == 404
    finally:
        await asyncio.gather(asyncio.to_thread(worker.stop), asyncio.to_thread(scheduler.stop))


async def test_rate_limit_waits_are_counted_per_queue(queue: TaskQueue, ops_settings: Settings) -> None:
    limit = RateLimit("rl-metrics", concurrency=1)
    for i in range(3):  # the first takes the one slot, the other two wait
        await queue.enqueue(jobs.add, args=(i, i), queue="rl", rate_limit=limit)
    await queue.enqueue(jobs.add, args=(9, 9), queue="free")  # no limit: never counted
    got = samples(await ProcessMetrics().render(queue.redis, ops_settings.key_prefix))
    assert got['asyncsched_rate_limit_waits_total{queue="rl"}'] == 2
    assert not any('queue="free"' in k for k in got if k.startswith("asyncsched_rate_limit"))
    # a caller in Python counts into the same series
    await count_rate_limit_waits(queue.redis, ops_settings.key_prefix, "rl", 3)
    async with Worker(["rl"], settings=ops_settings, burst=True) as worker:
        await worker.run()  # each finished job frees the slot for one waiting job: no new wait
    got = samples(await ProcessMetrics().render(queue.redis, ops_settings.key_prefix))
    assert got['asyncsched_rate_limit_waits_total{queue="rl"}'] == 5
    assert worker.processed == 3


async def test_event_delivery_lag_live_and_durable(ops_settings: Settings) -> None:
    saved = _metrics.bus_lag
    _metrics.bus_lag = None
    try:
        async with EventBus(settings=ops_settings) as bus:
            live: asyncio.Queue[Event] = asyncio.Queue()
            durable: asyncio.Queue[Event] = asyncio.Queue()
            await bus.subscribe("a", "lag.*", live.put)
            await bus.publish("lag.before", "src")
            await live.get()  # metrics not served in this process yet: nothing observed
            assert _metrics.bus_lag is None
            _metrics.enable_process_series()
            await bus.subscribe("d", "lag.*", durable.put, durable=True)
            for _ in range(3):
                await bus.publish("lag.after", "src")
            for _ in range(3):
                await live.get()
                await durable.get()
        got = samples(await ProcessMetrics().render())
        assert got['asyncsched_event_delivery_lag_seconds_count{mode="live"}'] == 3
        assert got['asyncsched_event_delivery_lag_seconds_count{mode="durable"}'] == 3
        assert got['asyncsched_event_delivery_lag_seconds_bucket{mode="live",le="+Inf"}'] == 3
        assert 0 <= got['asyncsched_event_delivery_lag_seconds_sum{mode="live"}'] < 30
    finally:
        _metrics.bus_lag = saved
