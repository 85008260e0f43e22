"""Fixtures of the operator CLI tests: the ``asyncsched`` command on a real redis-server and a database."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from asyncsched.config import Settings, set_settings
from asyncsched.queue import TaskQueue

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Cli:
    """Runs the ``asyncsched`` command against the test's backends: in this process (``main(argv)`` in a
    thread, its output captured) or, with ``subprocess=True``, as ``python -m asyncsched``."""

    settings: Settings
    subprocess: bool = False

    async def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        urls = ["--redis-url", self.settings.redis_url, "--database-url", self.settings.database_url]
        if not self.subprocess:
            return await asyncio.to_thread(_in_process, [*urls, "--log-level", "WARNING", *args])
        command = [sys.executable, "-m", "asyncsched", *urls, *args]
        return await asyncio.to_thread(
            subprocess.run,
            command,
            cwd=ROOT,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=90,
        )

    async def json(self, *args: str) -> Any:
        out = await self(*args, "--json")
        assert out.returncode == 0, (out.returncode, out.stderr)
        return json.loads(out.stdout)


_lock = threading.Lock()


def _in_process(argv: list[str]) -> subprocess.CompletedProcess[str]:
    from asyncsched.cli import main

    out, err = io.StringIO(), io.StringIO()
    with _lock, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        finally:
            set_settings(None)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture
def ops_settings(real_redis_url: str, tmp_path: Path) -> Settings:
    """A real redis-server (the command runs in another process) and a SQLite file; the task commands'
    test runs on every database (``database_url``)."""
    return Settings(redis_url=real_redis_url, database_url=f"sqlite+aiosqlite:///{tmp_path}/ops.db")


@pytest.fixture
def cli(ops_settings: Settings) -> Cli:
    return Cli(ops_settings)


@pytest.fixture
async def queue(ops_settings: Settings) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(settings=ops_settings) as q:
        yield q
