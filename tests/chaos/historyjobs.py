"""Jobs of the history fault tests: each run appends one line to a file (counted outside the system)."""

from __future__ import annotations

import asyncio
import os


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())  # one small O_APPEND write: atomic between processes
    finally:
        os.close(fd)


async def logged(path: str, i: int) -> int:
    """Append ``i`` to ``path``."""
    _append(path, str(i))
    return i


async def logged_sleep(path: str, i: int, seconds: float) -> int:
    """Append ``started <i>``, sleep, append ``i``."""
    _append(path, f"started {i}")
    await asyncio.sleep(seconds)
    _append(path, str(i))
    return i
