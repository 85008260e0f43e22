"""The correctness record every benchmark job writes: one line per execution, appended to ``$BENCH_LOG``.

A line is ``<job number> <start unix time> <end unix time> <enqueue unix time or 0>``. Small ``O_APPEND``
writes are atomic on Linux, so async jobs, thread-pool jobs and several processes can share the file. The
harness counts lines (executions) and distinct job numbers: both must equal N or the cell is INVALID.
This costs one ``write(2)`` per job and no Redis command, so it does not distort commands-per-job.
"""

from __future__ import annotations

import os
import time

_fd: int | None = None


def _open() -> int:
    global _fd
    if _fd is None:
        _fd = os.open(os.environ["BENCH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return _fd


def record(i: int, started: float, enqueued: float = 0.0) -> None:
    """Append this execution of job ``i`` (started at ``started``) to the log."""
    os.write(_open(), f"{i} {started:.6f} {time.time():.6f} {enqueued:.6f}\n".encode())
