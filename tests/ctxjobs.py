"""Jobs and worker hooks for the job-context tests (importable by workers in other processes)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncsched
from asyncsched.worker import CurrentJob, with_job


def _note(path: str, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text + "\n")


def noted(path: str) -> list[str]:
    """The lines :func:`_note` appended to ``path``."""
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [line.rstrip("\n") for line in fh if line.strip()]


def report_progress() -> dict[str, Any]:
    """A sync job: two progress reports; returns what it saw of itself."""
    job = asyncsched.current_job()
    assert job is not None
    job.progress(0.5)
    job.progress({"done": 2, "total": 2})
    return {"id": job.id, "attempt": job.attempt, "meta": job.meta, "thread": True}


async def areport_progress() -> dict[str, Any]:
    """An async job: one background report, one awaited."""
    job = asyncsched.current_job()
    assert job is not None
    job.progress(0.25)
    await job.aprogress(1.0)
    return {"id": job.id, "attempt": job.attempt, "meta": job.meta}


def bad_progress() -> None:
    job = asyncsched.current_job()
    assert job is not None
    job.progress(1.5)


def cooperative(started: str, seen: str, limit: float = 60.0) -> str:
    """Run until cancelled (checking the token), then note that it stopped; ``limit`` bounds it."""
    job = asyncsched.current_job()
    assert job is not None
    _note(started, job.id)
    deadline = time.monotonic() + limit
    while not job.cancelled and time.monotonic() < deadline:
        job.wait_cancelled(0.01)
    _note(seen, f"cancelled={job.is_cancelled()}")
    return "stopped early"


def uses_resources() -> str:
    job = asyncsched.current_job()
    assert job is not None
    return str(job.resources["pool"])


async def auses_resources() -> str:
    job = asyncsched.current_job()
    assert job is not None
    await asyncio.sleep(0)
    return str(job.resources["pool"])


class Hooks:
    """Hooks for ``--hooks tests.ctxjobs:Hooks``: notes every call in ``$CTX_HOOKS_LOG``."""

    def __init__(self) -> None:
        self.log = os.environ.get("CTX_HOOKS_LOG", os.devnull)

    async def on_startup(self, ctx: dict[str, Any]) -> None:
        ctx["pool"] = "pool-1"
        _note(self.log, "startup")

    def on_shutdown(self, ctx: dict[str, Any]) -> None:
        _note(self.log, f"shutdown {ctx['pool']}")

    def before_job(self, job: Any) -> None:
        _note(self.log, f"before {job.id} {asyncsched.current_job() is job}")

    async def after_job(self, job: Any) -> None:
        _note(self.log, f"after {job.id} {job.outcome} {type(job.error).__name__ if job.error else '-'}")


class FailingStartup:
    """``on_startup`` raises."""

    def on_startup(self, ctx: dict[str, Any]) -> None:
        raise RuntimeError("database is down")


def not_hooks() -> int:
    return 1


@with_job
def given_job(job: CurrentJob, x: int) -> dict[str, Any]:
    """Receives its job (the token) as first argument."""
    return {"id": job.id, "x": x, "cancelled": job.cancelled}


@with_job
async def agiven_job(job: CurrentJob, x: int) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"id": job.id, "x": x, "cancelled": job.cancelled}


@with_job
def whole_hash(job: CurrentJob) -> dict[str, Any]:
    """What the job sees of its hash: the claimed fields, then the whole hash (read on first use)."""
    before = job._hash is None
    h = job.hash
    return {
        "loaded_on_use": before and job._hash is not None,
        "claimed": sorted(job.fields),
        "hash": sorted(h),
        "origin": h["origin"].decode(),
        "status": h["status"].decode(),
        "worker": h["worker_name"].decode(),
        "rq_origin": job.rq_job().origin if "{" not in job.id else h["origin"].decode(),  # RQ: no cluster ids
    }


@with_job
async def awhole_hash(job: CurrentJob) -> dict[str, Any]:
    return {"hash": sorted(job.hash), "description": job.description, "meta": job.meta}
