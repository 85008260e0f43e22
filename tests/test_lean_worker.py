"""A worker process stays lean: what the CLI and the worker import at start-up leaves out the heavy modules
only other commands use (YAML, SQL, the web app, RQ itself: ~3.5 MB for ``yaml``, ~5.6 MB for ``rq``, far
more for SQLAlchemy). Checked in a fresh interpreter; ``rq.get_current_job()`` without importing ``rq`` is
``tests/worker/test_rq_current_lazy.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("yaml", "rq", "sqlalchemy", "alembic", "starlette", "croniter", "asyncpg", "aiosqlite")


def test_the_worker_command_imports_none_of_the_heavy_modules() -> None:
    code = (
        "import sys; import asyncsched.cli, asyncsched.cli._worker, asyncsched.worker; "
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules) or 'none')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["none"]
