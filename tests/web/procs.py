"""Helpers to run ``asyncsched run`` as a real child process in a user-like project directory."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from pathlib import Path


class Process:
    """A child process whose combined output is read line by line in the background."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, needle: str, timeout: float = 60.0) -> str:
        """The first line (from now) containing ``needle``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no line with {needle!r} within {timeout}s; output:\n" + "\n".join(self.seen)
                )
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            if needle in line:
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any asyncsched/Redis/database settings: zero configuration."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ASYNCSCHED_", "REDIS_", "DATABASE_", "RQ_")) and k != "PYTHONPATH"
    }
    env.update(extra)
    return env
