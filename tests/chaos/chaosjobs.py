"""Task functions of the fault-injection tests (importable by worker processes: ``tests.chaos.chaosjobs``)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any


def _mark(path: str) -> bool:
    """Create ``path``; ``True`` if it existed already (this is a second execution)."""
    if os.path.exists(path):
        return True
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    return False


def block_once(path: str, seconds: float) -> str:
    """Sync: the first execution marks ``path`` and blocks; any later execution returns at once."""
    if _mark(path):
        return "second"
    time.sleep(seconds)
    return "first"


async def async_block_once(path: str, seconds: float) -> str:
    """Async twin of :func:`block_once`."""
    if _mark(path):
        return "second"
    await asyncio.sleep(seconds)
    return "first"


def mark_and_sleep(path: str, seconds: float) -> str:
    """Sync: mark ``path`` (the job started), then sleep ``seconds``."""
    _mark(path)
    time.sleep(seconds)
    return "done"


async def async_mark_and_sleep(path: str, seconds: float) -> str:
    _mark(path)
    await asyncio.sleep(seconds)
    return "done"


def ok(value: Any = "ok") -> Any:
    return value


async def async_ok(value: Any = "ok") -> Any:
    return value


def not_json() -> object:
    """Returns a value JSON cannot encode."""
    return object()


class Unprintable(Exception):
    """An exception whose ``str()`` and ``repr()`` raise."""

    def __str__(self) -> str:
        raise RuntimeError("str() of this exception raises")

    def __repr__(self) -> str:
        raise RuntimeError("repr() of this exception raises")


def raise_unprintable() -> None:
    raise Unprintable()


async def async_raise_unprintable() -> None:
    raise Unprintable()
