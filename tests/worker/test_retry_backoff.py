"""Retries with exponential backoff, a cap and full jitter, and only on chosen exception types (issue 17)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsched.config import Settings
from asyncsched.queue import JobStatus, Retry, TaskQueue
from asyncsched.queue._retry import backoff_wait, retry_from_data, retry_matches
from asyncsched.testing import run_burst
from tests import jobs

pytestmark = pytest.mark.cluster  # retries run on a Redis Cluster too


def test_exponential_policy_fields() -> None:
    retry = Retry(5, backoff="exponential", base=1, cap=10, jitter=True, on=(TimeoutError, "httpx.HTTPError"))
    # RQ's retry_intervals: the capped waits without jitter (a stock RQ worker backs off the same way)
    assert retry.intervals == [1, 2, 4, 8, 10]
    policy = json.loads(retry.policy())
    assert policy == {
        "max": 5,
        "backoff": "exponential",
        "base": 1.0,
        "cap": 10.0,
        "jitter": True,
        "on": ["builtins.TimeoutError", "httpx.HTTPError"],
    }
    assert Retry(3, [1, 2]).policy() == ""  # RQ's fields say it all


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max": 0}, "at least 1"),
        ({"max": 2, "backoff": "linear"}, "backoff"),
        ({"max": 2, "jitter": True}, "needs backoff"),
        ({"max": 2, "backoff": "exponential", "cap": 0}, "base and cap"),
        ({"max": 2, "backoff": "exponential", "interval": 5}, "not both"),
        ({"max": 2, "on": ["not a name"]}, "exception class name"),
        ({"max": 2, "on": [int]}, "exception classes"),
    ],
)
def test_retry_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Retry(**kwargs)  # type: ignore[arg-type]


def test_backoff_wait_full_jitter_within_cap() -> None:
    policy = {"base": 1.0, "cap": 300.0, "jitter": True}
    assert backoff_wait({**policy, "jitter": False}, 4, lambda a, b: 0) == 8.0
    assert backoff_wait({**policy, "jitter": False}, 20, lambda a, b: 0) == 300.0
    seen = [backoff_wait(policy, 3, lambda a, b: b) for _ in range(3)]
    assert seen == [4.0, 4.0, 4.0]  # the upper bound of the draw is the capped exponential
    import random

    draws = [backoff_wait(policy, 10, random.uniform) for _ in range(200)]
    assert all(0 <= d <= 300 for d in draws)
    assert len(set(draws)) > 100


def test_retry_matches_by_class_hierarchy() -> None:
    from asyncsched.exceptions import JobTimeout

    assert retry_matches(["builtins.TimeoutError"], JobTimeout("x"))
    assert retry_matches(["builtins.OSError"], ConnectionError())
    assert not retry_matches(["builtins.KeyError"], ValueError())
    assert not retry_matches(["builtins.ValueError"], None)


def test_retry_from_data_resolves_names_by_the_safe_rule() -> None:
    retry = retry_from_data(
        {"max": 3, "backoff": "exponential", "on": ["TimeoutError", "asyncio.exceptions.CancelledError"]}
    )
    assert retry.on == ("builtins.TimeoutError", "asyncio.exceptions.CancelledError")
    with pytest.raises(ValueError, match=r"asyncio\.exceptions:CancelledError"):  # named where defined
        retry_from_data({"max": 3, "on": ["asyncio.CancelledError"]})
    with pytest.raises(ValueError, match=r"os\.path"):  # not an exception class defined where named
        retry_from_data({"max": 3, "on": ["os.path"]})
    with pytest.raises(ValueError, match="not an exception class"):
        retry_from_data({"max": 3, "on": ["tests.jobs.fail"]})
    with pytest.raises(ValueError, match=r"is not on the allow-list|not allowed"):  # not imported yet
        retry_from_data({"max": 3, "on": ["tests.never_imported_errors.Boom"]}, allow=())
    with pytest.raises(ValueError, match="max"):
        retry_from_data({"backoff": "exponential"})


async def test_worker_backs_off_with_jitter(
    queue: TaskQueue,
    redis_url: str,
    wsettings: Settings,
    tmp_path: Path,
    redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high / 2

    monkeypatch.setattr("asyncsched.worker._job._uniform", uniform)
    counter = str(tmp_path / "count")
    retry = Retry(3, backoff="exponential", base=20, cap=30, jitter=True)
    job_id = await queue.enqueue(jobs.fail_until, args=(counter, 9), retry=retry)
    h = await redis.hgetall(queue.keys.job(job_id))
    assert h[b"retries_left"] == b"3"
    assert json.loads(h[b"retry_intervals"]) == [20, 30, 30]
    before = time.time()
    await run_burst(redis=redis_url, settings=wsettings)
    assert await queue.status(job_id) == JobStatus.SCHEDULED
    score = await redis.zscore(queue.keys.scheduled("default"), job_id)
    assert draws == [(0.0, 20.0)]  # the first retry waits U(0, base)
    assert score is not None
    assert int(before + 10) - 1 <= score <= time.time() + 10
    assert (await queue.job(job_id)).retries_left == 2


async def test_retry_only_on_chosen_exceptions(
    queue: TaskQueue, redis_url: str, wsettings: Settings, tmp_path: Path
) -> None:
    counter = str(tmp_path / "count")
    other = await queue.enqueue(jobs.fail_until, args=(counter, 5), retry=Retry(3, on=KeyError))
    counter2 = str(tmp_path / "count2")
    chosen = await queue.enqueue(
        jobs.fail_until, args=(counter2, 3), retry=Retry(3, on=[LookupError, ValueError])
    )
    await run_burst(redis=redis_url, settings=wsettings)
    rec = await queue.job(other)
    assert rec.status == JobStatus.FAILED  # ValueError: not retried
    assert rec.retries_left == 3
    assert rec.attempt == 1
    rec = await queue.job(chosen)
    assert rec.status == JobStatus.SUCCESS
    assert rec.attempt == 3


@pytest.mark.parametrize("redis_url", ["redis"], indirect=True)  # a real server: RQ's and another process's
async def test_stock_rq_reads_backoff_fields(queue: TaskQueue, redis_url: str) -> None:
    from redis import Redis
    from rq.job import Job
    from rq.serializers import JSONSerializer

    job_id = await queue.enqueue(jobs.add, args=(1, 2), retry=Retry(4, backoff="exponential", base=2, cap=5))
    with Redis.from_url(redis_url) as conn:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
        assert job.retries_left == 4
        assert job.retry_intervals == [2, 4, 5, 5]
        assert job.get_retry_interval() == 2


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(["max", "interval", "backoff", "base", "cap", "jitter", "on", True, "x"])


@given(
    st.one_of(
        _json,
        st.dictionaries(
            _keys, _json | st.sampled_from(["exponential", "fixed", "TimeoutError", 3]), max_size=7
        ),
    )
)
@settings(max_examples=300, deadline=None)
def test_any_retry_value_is_a_policy_or_a_value_error(data: object) -> None:
    """Whatever a task file or an API body holds, it becomes a Retry or a ValueError (422, a file error)."""
    try:
        retry = retry_from_data(data, allow=())
    except ValueError:
        return
    assert retry.max >= 1
    assert all(isinstance(i, int) and i >= 0 for i in retry.intervals)
