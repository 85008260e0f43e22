"""Flow limits (rate limits, concurrency caps): enqueue options, and limits holding across worker processes
on a real redis-server, measured by the jobs themselves (tests/limit_jobs.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis as syncredis
import rq
from rq.serializers import JSONSerializer

from asyncsched.config import Settings
from asyncsched.exceptions import InvalidJob
from asyncsched.queue import JobStatus, Limit, RateLimit, TaskQueue
from asyncsched.rq._calls import LimitsCall
from asyncsched.rq._scripts import Scripts
from asyncsched.rq.keys import RQKeys
from asyncsched.worker import Worker, _claim, _limits
from tests import limit_jobs
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
HOLD = "tests.limit_jobs:hold"


async def _field(q: TaskQueue, job_id: str) -> str | None:
    raw = await q.redis.hget(f"rq:job:{job_id}", "asyncsched_limits")
    return raw.decode() if raw else None


async def test_enqueue_writes_limits(queue: TaskQueue) -> None:
    plain = await queue.enqueue(HOLD, args=("p", 0))
    assert await _field(queue, plain) is None  # no limit: nothing written, nothing checked
    a = await queue.enqueue(HOLD, args=("p", 0), rate_limit="openai:60/m")
    assert await _field(queue, a) == "openai\t\t60\t60.0"
    b = await queue.enqueue(
        HOLD,
        args=("p", 0),
        kwargs={"tenant_id": "t7"},
        concurrency_key="tenant:{tenant_id}",
        max_concurrency=5,
    )
    assert await _field(queue, b) == "tenant:t7\t5\t\t"
    c = await queue.enqueue(HOLD, args=("p", 0), rate_limit="5/10s", max_concurrency=2)
    assert await _field(queue, c) == f"function:{HOLD}\t2\t5\t10.0"


async def test_queue_and_function_policies(redis_url: str, wsettings: Settings) -> None:
    policies = {
        "queue:mail": Limit(rate="20/s"),
        f"function:{HOLD}": Limit(max_concurrency=3, concurrency_key="t:{tenant_id}"),
    }
    async with TaskQueue(redis_url, settings=wsettings, limits=policies) as q:
        job = await q.enqueue(HOLD, args=("p", 0), kwargs={"tenant_id": 1}, queue="mail")
        assert await _field(q, job) == "t:1\t3\t\t\nqueue:mail\t\t20\t1.0"
        other = await q.enqueue("tests.jobs:add", args=(1, 2))
        assert await _field(q, other) is None


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"rate_limit": "60 per minute"}, "rate_limit"),
        ({"rate_limit": "0/s"}, "rate_limit"),
        ({"rate_limit": "5/30d"}, "rate_limit"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": True}, "max_concurrency"),
        ({"concurrency_key": "x"}, "concurrency_key"),
        ({"concurrency_key": "t:{missing}", "max_concurrency": 1}, "missing"),
        ({"rate_limit": "a\tb:1/s"}, "rate_limit"),
    ],
)
async def test_bad_limits_name_the_field(queue: TaskQueue, options: dict[str, object], names: str) -> None:
    with pytest.raises(InvalidJob, match=names):
        await queue.enqueue(HOLD, args=("p", 0), **options)  # type: ignore[arg-type]


def test_bad_policies() -> None:
    with pytest.raises(ValueError, match="rate"):
        Limit(rate="fast")
    with pytest.raises(ValueError, match="needs a rate or a max_concurrency"):
        Limit()
    with pytest.raises(ValueError, match="queue:<name>"):
        TaskQueue("memory://limits-bad", limits={"mail": Limit(rate="1/s")})


async def test_capped_jobs_wait_without_a_slot(
    redis_url: str, wsettings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker with 4 slots, a cap of 1: the capped jobs run one at a time while an uncapped job
    queued behind them starts at once (the parked ones hold no slot)."""
    if redis_url.startswith("memory"):
        pytest.skip("the jobs read their record over a sync client (real Redis)")
    monkeypatch.setenv("LIMIT_TEST_REDIS", redis_url)
    out = str(tmp_path / "runs")
    async with TaskQueue(redis_url, settings=wsettings) as q:
        for i in range(3):
            await q.enqueue(HOLD, args=(out, 0.3, f"capped{i}"), max_concurrency=1)
        await q.enqueue(HOLD, args=(out, 0.0, "free"))
        async with Worker(redis=redis_url, settings=wsettings, concurrency=4, burst=True) as w:
            await asyncio.wait_for(w.run(), 30)
    runs = limit_jobs.read(out)
    assert len(runs) == 4
    capped = [(s, e) for _, _, s, e, label in runs if label.startswith("capped")]
    assert limit_jobs.max_overlap(capped) == 1
    free = next(r for r in runs if r[4] == "free")
    assert free[2] < min(s for s, _ in capped) + 0.25  # not behind the capped ones


async def test_every_outcome_releases_the_slot(queue: TaskQueue, redis_url: str, wsettings: Settings) -> None:
    """A cap of 1: a job that fails, then two that succeed, all parked behind each other, all run; nothing
    is left holding or waiting (on memory:// too: the same scripts)."""
    opts: dict[str, Any] = {"max_concurrency": 1, "concurrency_key": "one"}
    failing = await queue.enqueue("tests.jobs:fail", **opts)
    ok = [await queue.enqueue("tests.jobs:add", args=(i, 1), **opts) for i in range(2)]
    async with Worker(redis=redis_url, settings=wsettings, concurrency=4, burst=True) as w:
        await asyncio.wait_for(w.run(), 30)
    assert await queue.status(failing) == JobStatus.FAILED
    assert [await queue.status(j) for j in ok] == [JobStatus.SUCCESS] * 2
    (usage,) = await queue.limits_usage()
    assert (usage.key, usage.max_concurrency, usage.running, usage.waiting) == ("one", 1, 0, 0)


async def test_rate_on_the_embedded_backend_too(
    queue: TaskQueue, redis_url: str, wsettings: Settings
) -> None:
    """5 starts per 0.5 s, 12 jobs, one burst worker: starts (the claim's started_at) never exceed 5 in
    any 0.5 s, and the burst worker waits for the parked jobs instead of exiting."""
    ids = [await queue.enqueue("tests.jobs:add", args=(i, 1), rate_limit="r:5/500ms") for i in range(12)]
    async with Worker(redis=redis_url, settings=wsettings, concurrency=8, burst=True) as w:
        await asyncio.wait_for(w.run(), 30)
    records = [await queue.job(j) for j in ids]
    assert {r.status for r in records} == {JobStatus.SUCCESS}
    starts = [r.started_at.timestamp() for r in records if r.started_at is not None]
    assert len(starts) == 12
    assert limit_jobs.max_in_window(starts, 0.5 - 1e-5) == 5
    assert max(starts) - min(starts) >= 1.0 - 1e-5  # 12 starts at 5 per 0.5 s: a third window


@pytest.mark.parametrize(
    ("module", "skew"), [(_claim, -0.3), (_limits, 0.3)], ids=["claim-behind", "promoter-ahead"]
)
async def test_a_rate_is_measured_on_the_clock_of_redis(
    queue: TaskQueue,
    redis_url: str,
    wsettings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    module: object,
    skew: float,
) -> None:
    """Issue 17: a worker clock that differs from Redis' (another host, or a stall between reading it and the
    script running) lets no job start early. Behind: a claim that read its clock, then waited 0.3 s, must not
    date its starts in the past (jobs let go at a window's end would start twice in one window); ahead: a
    promoter waking 0.3 s early must not let parked jobs go. Every script times a rate on Redis' clock (the
    claim module reads no clock at all any more: its patch stays unused)."""
    real = time.time
    fake = SimpleNamespace(time=lambda: real() + skew, monotonic=time.monotonic)
    monkeypatch.setattr(module, "time", fake, raising=False)
    ids = [await queue.enqueue("tests.jobs:add", args=(i, 1), rate_limit="r:2/s") for i in range(6)]
    # two queues: claims are not pipelined behind a blocking pop (which always used Redis' clock)
    async with Worker(["default", "spare"], redis=redis_url, settings=wsettings, burst=True) as w:
        await asyncio.wait_for(w.run(), 30)
    starts = [r.started_at.timestamp() for r in [await queue.job(j) for j in ids] if r.started_at]
    assert len(starts) == 6
    assert limit_jobs.max_in_window(starts, 1.0 - 1e-5) == 2


async def test_rq_ratelimit_is_listed_with_ours(queue: TaskQueue) -> None:
    await queue.enqueue("tests.jobs:add", args=(1, 1), rate_limit=RateLimit("smtp", concurrency=1))
    await queue.enqueue("tests.jobs:add", args=(1, 2), rate_limit=RateLimit("smtp", concurrency=1))
    (usage,) = await queue.limits_usage()
    assert usage.as_dict() == {
        "key": "smtp", "kind": "rq", "max_concurrency": 1, "rate": None, "period": None,
        "running": 1, "started": 0, "waiting": 1,
    }  # fmt: skip


def _spawn(url: str, out_env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "asyncsched.worker", "--redis-url", url, "--no-scheduler", *extra]
    env = {**os.environ, **out_env, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def workers(real_redis_url: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [_spawn(real_redis_url, {"LIMIT_TEST_REDIS": real_redis_url}, "-c", "4") for _ in range(3)]
    yield procs
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


async def _ready(q: TaskQueue) -> None:
    async def three() -> bool:
        return len(await q.workers()) == 3

    await eventually(three, timeout=60, what="3 worker processes to register")


@pytest.mark.slow
async def test_concurrency_cap_across_worker_processes(
    real_redis_url: str, workers: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """3 worker processes (4 slots each), a cap of 2 per tenant: never more than 2 of a tenant at once."""
    out = str(tmp_path / "runs")
    async with TaskQueue(real_redis_url, settings=Settings(redis_url=real_redis_url)) as q:
        await _ready(q)
        for _ in range(10):
            for tenant in ("a", "b"):
                await q.enqueue(
                    HOLD,
                    args=(out, 0.15),
                    kwargs={"tenant_id": tenant},
                    concurrency_key="tenant:{tenant_id}",
                    max_concurrency=2,
                )
        await eventually(lambda: len(limit_jobs.read(out)) == 20, timeout=60, what="20 jobs to finish")
    runs = limit_jobs.read(out)
    for tenant in ("a", "b"):
        spans = [(s, e) for _, _, s, e, label in runs if label == tenant]
        assert len(spans) == 10
        assert limit_jobs.max_overlap(spans) == 2, tenant  # held, and reached (the cap is not a lock)
    assert limit_jobs.max_overlap([(s, e) for _, _, s, e, _ in runs]) > 2  # tenants do not limit each other


@pytest.mark.slow
async def test_rate_limit_across_worker_processes(
    real_redis_url: str, workers: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """3 worker processes, 20 starts/s: no second (any window) holds more than 20 starts, and the jobs go as
    soon as starts free (60 jobs take about 2 s, not more)."""
    out = str(tmp_path / "runs")
    async with TaskQueue(real_redis_url, settings=Settings(redis_url=real_redis_url)) as q:
        await _ready(q)
        await q.enqueue_many(
            [{"func": HOLD, "args": (out, 0.0), "rate_limit": "api:20/s"} for _ in range(60)]
        )
        await eventually(lambda: len(limit_jobs.read(out)) == 60, timeout=60, what="60 jobs to finish")
    claims = [c for _, c, _, _, _ in limit_jobs.read(out)]
    # started_at is RQ's text (microseconds): allow its rounding, nothing more
    assert limit_jobs.max_in_window(claims, 1.0 - 1e-5) <= 20
    span = max(claims) - min(claims)
    assert 2.0 - 1e-5 <= span < 3.5, span


@pytest.mark.slow
def test_the_example_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("REDIS_URL", None)
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "flow_limits.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    starts = [line.split() for line in out.stdout.splitlines() if line.endswith("starts")]
    assert len(starts) == 12
    assert "key='tenant:acme'" in out.stdout
    assert "key='openai'" in out.stdout


_GATES: dict[str, asyncio.Event] = {}


async def gated(name: str) -> str:
    """A job that runs until the test opens its gate (same process, same loop)."""
    await _GATES[name].wait()
    return name


async def _status(q: TaskQueue, job_id: str) -> str:
    raw = await q.redis.hget(f"rq:job:{job_id}", "status")
    return raw.decode() if raw else ""


@pytest.mark.parametrize("kind", ["cap", "rq-ratelimit"])
async def test_burst_worker_waits_for_jobs_parked_by_a_limit_held_elsewhere(
    queue: TaskQueue, redis_url: str, wsettings: Settings, kind: str
) -> None:
    """Issue 17: a burst worker does not exit while a job of its queue is parked by a concurrency cap (ours,
    or RQ 3's RateLimit) that another worker holds; it waits, runs the job when the slot frees, then exits."""
    gate = _GATES[kind] = asyncio.Event()
    opts: dict[str, Any] = (
        {"max_concurrency": 1, "concurrency_key": "held"}
        if kind == "cap"
        else {"rate_limit": RateLimit("held", concurrency=1)}
    )
    holder = await queue.enqueue(f"{__name__}:gated", args=(kind,), queue="holder", **opts)
    async with Worker(["holder"], redis=redis_url, settings=wsettings) as other:
        other_run = asyncio.create_task(other.run())
        await eventually(lambda: _status_is(queue, holder, "started"), 15, "the holder to start")
        waiting = await queue.enqueue("tests.jobs:add", args=(20, 22), **opts)
        async with Worker(redis=redis_url, settings=wsettings, burst=True) as burst:
            run = asyncio.create_task(burst.run())
            await eventually(lambda: _status_is(queue, waiting, "rate_limited"), 15, "the job to be parked")
            done, _ = await asyncio.wait({run}, timeout=1.0)  # it would have exited by now
            assert not done, "the burst worker exited with a job of its queue parked"
            gate.set()  # the holder finishes: its slot goes to the parked job, which the burst worker runs
            await asyncio.wait_for(run, 30)
        assert await queue.result(waiting, wait=5) == 42
        assert burst.processed == 1
        other.request_stop()
        await asyncio.wait_for(other_run, 30)
    assert await queue.result(holder) == kind


async def _status_is(q: TaskQueue, job_id: str, status: str) -> bool:
    return await _status(q, job_id) == status


async def test_burst_worker_ignores_parked_jobs_of_other_queues(
    queue: TaskQueue, redis_url: str, wsettings: Settings
) -> None:
    """A job parked for a queue a burst worker does not serve does not keep it waiting."""
    gate = _GATES["other"] = asyncio.Event()
    opts: dict[str, Any] = {"max_concurrency": 1, "concurrency_key": "other"}
    holder = await queue.enqueue(f"{__name__}:gated", args=("other",), queue="holder", **opts)
    async with Worker(["holder", "elsewhere"], redis=redis_url, settings=wsettings) as other:
        other_run = asyncio.create_task(other.run())
        await eventually(lambda: _status_is(queue, holder, "started"), 15, "the holder to start")
        parked = await queue.enqueue("tests.jobs:add", args=(1, 1), queue="elsewhere", **opts)
        await eventually(lambda: _status_is(queue, parked, "rate_limited"), 15, "the job to be parked")
        async with Worker(redis=redis_url, settings=wsettings, burst=True) as w:
            await asyncio.wait_for(w.run(), 30)  # serves "default" only: nothing of its own waits
        assert await _status(queue, parked) == "rate_limited"
        gate.set()
        assert await queue.result(parked, wait=10) == 2
        other.request_stop()
        await asyncio.wait_for(other_run, 30)


async def test_a_burst_worker_takes_jobs_let_go_elsewhere_at_once(
    queue: TaskQueue, redis_url: str, wsettings: Settings
) -> None:
    """Issue 17: a burst worker waiting for a job parked by a rate blocks on its queue, so the job starts as
    soon as anyone lets it go (another worker's promoter; here the tidy pass, run by the test after emptying
    the window), not when the worker's own timer ends (its poll timeout, 4 s here; the window, 30 s)."""
    opts: dict[str, Any] = {"rate_limit": "r:1/30s"}
    await queue.enqueue("tests.jobs:add", args=(1, 1), **opts)
    second = await queue.enqueue("tests.jobs:add", args=(2, 1), **opts)
    async with Worker(redis=redis_url, settings=wsettings, burst=True, poll_timeout=4.0) as w:
        run = asyncio.create_task(w.run())
        await eventually(lambda: _status_is(queue, second, "rate_limited"), 15, "the second job to be parked")
        await queue.redis.delete("rq:asyncsched:limit:r:starts")
        await Scripts(queue.redis).call(LimitsCall(RQKeys("rq"), "", "", True))  # lets the second job go
        assert await queue.result(second, wait=2) == 3
        w.request_stop()  # (it would wait for the window's end: the start it knows of leaves it then)
        await asyncio.wait_for(run, 30)


async def test_a_scheduled_job_is_not_held_up_by_a_rate_backlog(real_redis_url: str) -> None:
    """The promoter wakes often for jobs parked by a rate (here every 0.1 s) and then skips the scheduled
    registries, but still looks at them every second: a job RQ's producer scheduled (no wake-up message
    for our promoter) starts within about a second of its time, not after the backlog (5 s of it)."""
    settings = Settings(redis_url=real_redis_url)
    conn = syncredis.Redis.from_url(real_redis_url)
    async with TaskQueue(real_redis_url, settings=settings) as q:
        limited = [await q.enqueue("tests.jobs:add", args=(i, 1), rate_limit="r:1/100ms") for i in range(50)]
        async with Worker(redis=real_redis_url, settings=settings, burst=True) as w:
            run = asyncio.create_task(w.run())
            await eventually(lambda: _status_is(q, limited[3], "finished"), 15, "the backlog to start")
            asked = time.time()  # the promoter looked at the (empty) scheduled registry already
            rq_queue = rq.Queue("default", connection=conn, serializer=JSONSerializer)
            later = rq_queue.enqueue_in(timedelta(seconds=0.5), "tests.jobs.add", 0, 0).id
            await asyncio.wait_for(run, 30)
        started = (await q.job(later)).started_at
        records = [await q.job(j) for j in limited]
    conn.close()
    assert started is not None
    assert started.timestamp() - asked < 2.5  # RQ's whole-second score, then at most a second
    assert max(r.started_at.timestamp() for r in records if r.started_at is not None) - asked > 4.5
