"""Run the spec's deployment with one command: the app (uvicorn) and ``python -m asyncsched.worker``.

::

    cd examples/spec_app
    REDIS_URL=redis://localhost:6379/0 python run.py      # then open http://127.0.0.1:8000/api/scheduler/dashboard

Exactly the two processes of the spec: the app registers ``tasks.yaml`` at startup; the worker runs jobs and,
as ``rq worker --with-scheduler`` does, fires the schedules, records history and publishes ``task.*`` events.
Both share ``REDIS_URL`` (default ``redis://localhost:6379/0``) and ``DATABASE_URL`` (default a SQLite file
here). Ctrl-C stops both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    env = dict(os.environ)
    env.setdefault("REDIS_URL", "redis://localhost:6379/0")
    env.setdefault("DATABASE_URL", f"sqlite+aiosqlite:///{HERE / 'spec_app.db'}")
    port = env.get("PORT", "8000")
    app = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", port, "--log-level", "warning"],
        cwd=HERE,
        env=env,
    )
    worker = subprocess.Popen([sys.executable, "-m", "asyncsched.worker"], cwd=HERE, env=env)
    print(f"app on http://127.0.0.1:{port}/api/scheduler/dashboard; Ctrl-C stops", flush=True)
    try:
        while app.poll() is None and worker.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                app.wait(1)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (worker, app):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (worker, app):
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
    return max(app.returncode or 0, worker.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())
