"""No Redis reply can stop a process: keys of the wrong type, planted by whoever can write to Redis.

``SET rq:job:x "str"; RPUSH rq:queue:default x`` used to make ``asyncsched worker`` and ``asyncsched run``
exit within a second (WRONGTYPE from the claim script); a queue key of the wrong type turned ``POST /jobs``
and ``GET /queues`` into 500s, and a worker whose BLMOVE was refused spun. Now the poisoned job is skipped
(removed from its queue, logged), a poisoned queue is paused with backoff while the others run, the API
answers that request alone with a JSON 503 naming the key, and the process only exits when told to.
Executions are counted outside the system (each job appends a line to a file).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as syncredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncsched.config import Settings
from asyncsched.exceptions import RedisRefused
from asyncsched.queue import TaskQueue
from asyncsched.testing import run_burst
from tests.chaos.procs import Proc, tracebacks
from tests.servers import free_port
from tests.waiting import eventually

MARK = "tests.hostile.hostilejobs:mark"


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _poison(url: str) -> None:
    r = syncredis.Redis.from_url(url)
    try:
        r.set("rq:job:x", "str")  # a job "hash" that is a string
        r.rpush("rq:queue:default", "x")
        r.set("rq:queue:broken", "str")  # a queue "list" that is a string
        r.sadd("rq:queues", "rq:queue:broken")
    finally:
        r.close()


async def _enqueue(url: str, path: Path, queue: str) -> str:
    async with TaskQueue(url, settings=Settings(redis_url=url)) as q:
        return await q.enqueue(MARK, args=[str(path)], queue=queue)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("queues", [["default"], ["default", "other", "broken"]], ids=["one-queue", "three"])
async def test_worker_skips_a_poisoned_job_pauses_a_poisoned_queue_and_goes_on(
    real_redis_url: str, tmp_path: Path, procs: list[Proc], queues: list[str]
) -> None:
    marks = tmp_path / "marks"
    _poison(real_redis_url)
    args = ["--redis-url", real_redis_url, "--log-level", "INFO", "worker", *queues]
    worker = Proc(args, tmp_path / "worker.log")
    procs.append(worker)
    await eventually(lambda: "listening on" in worker.log(), 30, "the worker to start")
    for queue in [q for q in queues if q != "broken"]:
        await _enqueue(real_redis_url, marks, queue)  # the same queue as the poison, and another
    await eventually(lambda: _lines(marks) == len(queues) - ("broken" in queues), 30, "the good jobs")
    _poison(real_redis_url)  # again, while it runs
    await _enqueue(real_redis_url, marks, "default")
    await eventually(lambda: _lines(marks) == len(queues) - ("broken" in queues) + 1, 30, "one more")
    log = worker.log()
    assert worker.alive(), log
    assert "rq:job:x" in log
    assert "WRONGTYPE" in log
    assert tracebacks(log) == 0, log
    r = syncredis.Redis.from_url(real_redis_url)
    try:
        assert r.lrange("rq:queue:default", 0, -1) == []  # the poisoned id is not hot-looped
    finally:
        r.close()
    if "broken" in queues:
        assert "queue broken refused by Redis" in log
    worker.signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0


@pytest.mark.slow
async def test_a_worker_whose_only_queue_is_refused_backs_off_instead_of_spinning(
    real_redis_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    _poison(real_redis_url)
    worker = Proc(["--redis-url", real_redis_url, "worker", "broken"], tmp_path / "worker.log")
    procs.append(worker)
    await eventually(lambda: "queue broken refused" in worker.log(), 30, "the first refusal")
    cpu_before, began = worker.cpu_seconds(), time.monotonic()
    await asyncio.sleep(4)  # measuring idle CPU over a window: nothing to await
    cpu = worker.cpu_seconds() - cpu_before
    elapsed = time.monotonic() - began
    refusals = worker.log().count("queue broken refused")
    assert worker.alive()
    assert cpu < 0.25 * elapsed, f"{cpu:.2f}s of CPU in {elapsed:.1f}s: spinning"
    assert refusals <= 4, worker.log()  # 1 s, 2 s, 4 s...: a handful of lines, not a flood
    # the queue is usable again once fixed
    r = syncredis.Redis.from_url(real_redis_url)
    try:
        r.delete("rq:queue:broken")
    finally:
        r.close()
    marks = tmp_path / "marks"
    await _enqueue(real_redis_url, marks, "broken")
    await eventually(lambda: _lines(marks) == 1, 90, "the job on the repaired queue")


@pytest.mark.slow
async def test_run_keeps_serving_and_running_with_wrong_type_keys(
    real_redis_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    marks = tmp_path / "marks"
    port = free_port()
    env = {
        "ASYNCSCHED_QUEUES": "default,broken",
        "ASYNCSCHED_ALLOWED_FUNCTIONS": "tests.hostile",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/run.db",
    }
    args = ["--redis-url", real_redis_url, "--log-level", "INFO", "run", "--port", str(port)]
    run = Proc(args, tmp_path / "run.log", env=env)
    procs.append(run)
    await eventually(lambda: "dashboard http" in run.log(), 60, "the server to start")
    _poison(real_redis_url)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/scheduler", timeout=30) as client:
        refused = await client.post("/jobs", json={"function": MARK, "args": [str(marks)], "queue": "broken"})
        assert refused.status_code == 503, refused.text
        assert "rq:queue:broken" in refused.json()["detail"]
        listed = await client.get("/queues")
        assert listed.status_code == 200, listed.text
        assert "broken" in [q["name"] for q in listed.json()["items"]]
        accepted = await client.post("/jobs", json={"function": MARK, "args": [str(marks)]})
        assert accepted.status_code == 202, accepted.text
        await eventually(lambda: _lines(marks) == 1, 30, "the good job")
        await asyncio.sleep(2)  # the process used to exit within a second: give it the chance
        assert run.alive(), run.log()
        assert (await client.get("/health")).status_code in (200, 503)
        accepted = await client.post("/jobs", json={"function": MARK, "args": [str(marks)]})
        assert accepted.status_code == 202
        await eventually(lambda: _lines(marks) == 2, 30, "another good job")
    assert run.alive()
    run.signal(signal.SIGINT)
    assert await asyncio.to_thread(run.wait, 60) == 0


async def test_enqueue_on_a_refused_queue_fails_that_job_alone(redis_url: str) -> None:
    settings_ = Settings(redis_url=redis_url)
    async with TaskQueue(redis_url, settings=settings_) as q:
        await q.redis.set("rq:queue:broken", "str")
        results = await asyncio.gather(  # coalesced into one script call
            q.enqueue(MARK, args=["a"], queue="broken"),
            q.enqueue(MARK, args=["b"], queue="default"),
            return_exceptions=True,
        )
        assert isinstance(results[0], RedisRefused)
        assert "rq:queue:broken" in str(results[0])
        assert isinstance(results[1], str)
        assert await q.redis.lrange("rq:queue:default", 0, -1) == [results[1].encode()]
        counts = await q.queue_counts()
        assert counts["default"]["queued"] == 1
        with pytest.raises(RedisRefused, match="1 of 2 jobs"):
            await q.enqueue_many([{"func": MARK, "queue": "broken"}, {"func": MARK}])


# ---------------------------------------------------------------------------------------------- hypothesis

_VALUE = st.one_of(st.binary(max_size=40), st.text(max_size=20), st.integers().map(str))
_HASH = st.dictionaries(
    st.sampled_from(
        ["data", "status", "description", "created_at", "timeout", "result_ttl", "meta", "origin"]
    )
    | st.text(max_size=8),
    _VALUE,
    max_size=8,
)
_KEY_KIND = st.sampled_from(["hash", "string", "list", "set", "zset", "stream", "missing"])


def _plant(r: syncredis.Redis, key: str, kind: str, h: dict[str, bytes | str]) -> None:
    r.delete(key)
    if kind == "hash" and h:
        r.hset(key, mapping=h)
    elif kind == "string":
        r.set(key, "str")
    elif kind == "list":
        r.rpush(key, "a")
    elif kind == "set":
        r.sadd(key, "a")
    elif kind == "zset":
        r.zadd(key, {"a": 1})
    elif kind == "stream":
        r.xadd(key, {"a": "1"})


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(jobs=st.lists(st.tuples(_KEY_KIND, _HASH, _KEY_KIND), min_size=1, max_size=5))
def test_any_job_hash_or_key_type_never_stops_a_worker(
    real_redis_url: str, tmp_path: Path, jobs: list[tuple[str, dict[str, bytes | str], str]]
) -> None:
    """Arbitrary job hashes and keys of any type (the job hash, its executions zset) ahead of a good job:
    a burst worker claims, skips or fails each of them and returns; nothing raises, nothing stays
    queued, and the good job behind them runs."""
    marks = tmp_path / "marks"
    marks.unlink(missing_ok=True)
    r = syncredis.Redis.from_url(real_redis_url)
    try:
        r.flushall()
        for n, (kind, h, ex_kind) in enumerate(jobs):
            _plant(r, f"rq:job:h{n}", kind, h)
            _plant(r, f"rq:executions:h{n}", ex_kind, {})
            r.rpush("rq:queue:default", f"h{n}")

        async def scenario() -> None:
            await _enqueue(real_redis_url, marks, "default")
            await asyncio.wait_for(run_burst(["default"], redis=real_redis_url), 60)

        asyncio.run(scenario())
        assert r.llen("rq:queue:default") == 0
        assert _lines(marks) == 1
    finally:
        r.close()
