"""Task functions used by the queue and worker tests (importable by workers in other processes)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

_events: dict[str, threading.Event] = {}


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


def fail(message: str = "boom") -> None:
    raise ValueError(message)


async def async_fail(message: str = "boom") -> None:
    raise RuntimeError(message)


def none() -> None:
    return None


def stamp() -> float:
    """When the job started (epoch seconds): delays are measured by the job itself."""
    return time.time()


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def fail_until(path: str, succeed_on: int) -> int:
    """Fail until called ``succeed_on`` times (counted in a file, so it works across processes)."""
    count = 1
    if os.path.exists(path):
        with open(path) as fh:
            count = int(fh.read()) + 1
    with open(path, "w") as fh:
        fh.write(str(count))
    if count < succeed_on:
        raise ValueError(f"attempt {count}")
    return count


def touch_and_sleep(path: str, seconds: float) -> str:
    """Create ``path`` (a signal to the test that the job is running), then sleep."""
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


def touch_and_wait(path: str, release: str, limit: float = 120.0) -> str:
    """Create ``path`` (the job is running), then run until ``release`` exists (the test says so)."""
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    deadline = time.monotonic() + limit
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.02)
    return "released"


async def async_touch_and_sleep(path: str, seconds: float) -> str:
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    await asyncio.sleep(seconds)
    return "slept"


def enqueue_from_thread(redis_url: str) -> str:
    """A sync task that enqueues another job through the sync facade (runs in a worker thread)."""
    from asyncsched.config import Settings
    from asyncsched.sync import TaskQueue

    with TaskQueue(redis_url, settings=Settings(redis_url=redis_url)) as q:
        return q.enqueue("tests.jobs:add", args=(1, 1), agent_name="child")


class NotJSON:
    pass


def note(path: str, text: str, seconds: float = 0.0) -> str:
    """Append ``text`` and the time to ``path`` (one line), after sleeping ``seconds``; return ``text``."""
    start = time.time()
    time.sleep(seconds)
    with open(path, "a") as fh:
        fh.write(f"{text} {start:.6f} {time.time():.6f}\n")
    return text


def noted(path: str) -> list[str]:
    """The texts :func:`note` appended to ``path``, in order."""
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [line.split()[0] for line in fh if line.strip()]


def note_fail(path: str, text: str) -> None:
    """:func:`note`, then raise ``ValueError(text)``."""
    note(path, text)
    raise ValueError(text)


def note_current(path: str) -> str:
    """Note the id of ``rq.get_current_job()`` and of ``asyncsched.current_job()`` (``none`` if absent)."""
    import rq

    import asyncsched

    job = rq.get_current_job()
    assert job is None or job.connection.ping()
    ours = asyncsched.current_job()
    note(path, f"rq:{job.id if job else 'none'}")
    return ours.id if ours is not None else "none"


async def anote_current(path: str) -> str:
    """:func:`note_current` from a coroutine job."""
    await asyncio.sleep(0)
    return note_current(path)


# RQ callbacks (rq.Callback): RQ's signatures; they note into the job's first argument (a path)
def cb_success(job: Any, connection: Any, result: Any, *args: Any, **kwargs: Any) -> None:
    assert connection.ping()
    note(job.args[0], f"on_success:{job.id}:{result}")


def cb_failure(job: Any, connection: Any, typ: Any, value: Any, tb: Any) -> None:
    note(job.args[0], f"on_failure:{job.id}:{typ.__name__}")


def cb_stopped(job: Any, connection: Any) -> None:
    note(job.args[0], f"on_stopped:{job.id}")


def cb_broken(job: Any, connection: Any, *args: Any) -> None:
    raise RuntimeError("callback broke")


def cb_slow(job: Any, connection: Any, *args: Any) -> None:
    time.sleep(3)


def return_rq_retry() -> Any:
    """RQ 3's retry-by-return: the job returns ``rq.Retry``."""
    import rq

    return rq.Retry(max=2)


class Counter:
    """For an RQ job on a bound method (``q.enqueue(Counter().bump)``)."""

    def bump(self) -> int:
        return 1


# arq functions: arq's signature, ctx first
async def arq_add(ctx: dict[str, Any], a: int, b: int) -> int:
    assert ctx["job_id"]
    assert ctx["job_try"] >= 1
    return a + b


async def arq_fail(ctx: dict[str, Any], message: str) -> None:
    raise ValueError(message)


class ArqSettings:
    """What an arq deployment's ``WorkerSettings`` looks like (read by ``Worker(arq="module:Class")``)."""

    functions = (arq_add, arq_fail)


def rq_current_lazily() -> str:
    """``<was rq.job imported before this job imported it>:<rq.get_current_job()'s id>``."""
    import sys

    before = "rq.job" in sys.modules
    import rq

    job = rq.get_current_job()
    return f"{before}:{job.id if job else 'none'}"
