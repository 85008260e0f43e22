"""Real ``asyncsched`` processes for the fault-injection tests, with their output in a file to inspect."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """One ``python -m asyncsched ...`` process; stdout and stderr go to ``log_path``.

    It runs in the log's directory (a test's own ``tmp_path``), not in the repository: a process that
    falls back to a relative default (``./asyncsched.db``) then writes in the test's directory, never in a
    place two tests (or two xdist processes) share."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._fh = open(log_path, "wb")  # noqa: SIM115  # closed in stop()
        path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)
        full_env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "asyncsched", *args],
            cwd=log_path.resolve().parent,
            env=full_env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._fh.close()


def worker(redis_url: str, log_path: Path, *extra: str) -> Proc:
    """An ``asyncsched worker`` with short leases (2 s, heartbeat 0.5 s) unless ``extra`` overrides them."""
    args = ["--redis-url", redis_url, "--log-level", "INFO", "worker"]
    args += ["--lease", "2", "--heartbeat-interval", "0.5", *extra]
    return Proc(args, log_path)


def tracebacks(text: str) -> int:
    """How many tracebacks a log holds."""
    return text.count("Traceback (most recent call last)")
