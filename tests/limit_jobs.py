"""Jobs of the flow-limit tests: each records when it ran, as it saw it (importable by worker processes).

A line per run, appended to ``path`` in one ``write`` (O_APPEND: lines of concurrent processes never mix):
``job_id started_at(claim, epoch s) start(own clock) end(own clock) label``. ``started_at`` is the instant the
claim script took the job (read back from the job's own hash), the one a rate limit counts; ``start`` and
``end`` bracket the function body.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime

import redis

import asyncsched


def _started_at() -> float:
    job = asyncsched.current_job()
    assert job is not None
    url = os.environ["LIMIT_TEST_REDIS"]
    with redis.Redis.from_url(url) as r:
        raw = r.hget(f"rq:job:{job.id}", "started_at")
    assert isinstance(raw, bytes)
    text = raw.decode().rstrip("Z")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def _write(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def hold(path: str, seconds: float, label: str = "", tenant_id: str = "") -> None:
    start = time.time()
    claimed = await asyncio.to_thread(_started_at)
    await asyncio.sleep(seconds)
    job = asyncsched.current_job()
    assert job is not None
    _write(path, f"{job.id} {claimed!r} {start!r} {time.time()!r} {label or tenant_id or '-'}\n")


def hold_sync(path: str, seconds: float, label: str = "") -> None:
    start = time.time()
    claimed = _started_at()
    time.sleep(seconds)
    job = asyncsched.current_job()
    assert job is not None
    _write(path, f"{job.id} {claimed!r} {start!r} {time.time()!r} {label or '-'}\n")


def read(path: str) -> list[tuple[str, float, float, float, str]]:
    out = []
    if os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                job_id, claimed, start, end, label = line.split()
                out.append((job_id, float(claimed), float(start), float(end), label))
    return out


def max_overlap(runs: list[tuple[float, float]]) -> int:
    """The most intervals [start, end] open at one instant."""
    edges = sorted([(s, 1) for s, _ in runs] + [(e, -1) for _, e in runs], key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, step in edges:
        cur += step
        best = max(best, cur)
    return best


def max_in_window(times: list[float], period: float) -> int:
    """The most of ``times`` in any half-open window [t, t + period)."""
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - period:
            j += 1
        best = max(best, i - j + 1)
    return best
