"""Every python/bash snippet of README.md and docs/*.md runs (see ``snippets.py`` for the marks), so the
docs cannot rot. Each runs in a fresh process inside a small project (the spec example's ``app`` package
and ``tasks.yaml``) on the embedded backends: ``memory://`` Redis and a SQLite file."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .snippets import Snippet, extract

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPETS = [s for doc in DOCS for s in extract(doc)]

RUNNER = """
import ast, asyncio, sys, types
source = open(sys.argv[1], encoding="utf-8").read()
code = compile(source, sys.argv[2], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
namespace = {"__name__": "__main__"}
if code.co_flags & 0x80:  # CO_COROUTINE: the snippet awaits at top level
    asyncio.run(types.FunctionType(code, namespace)())
else:
    exec(code, namespace)
"""

SERVICES = """
def send_report(day: str = "mon") -> dict:
    return {"day": day}


def my_function(*args, **kwargs) -> dict:
    return {"args": args, "kwargs": kwargs}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    example = ROOT / "examples" / "spec_app"
    shutil.copytree(example / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(example / "tasks.yaml", tmp_path / "tasks.yaml")
    with (tmp_path / "app" / "services" / "__init__.py").open("a") as f:
        f.write(SERVICES)
    (tmp_path / "_run_snippet.py").write_text(RUNNER)
    return tmp_path


def _env(project: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ASYNCSCHED_", "REDIS_", "DATABASE_", "RQ_", "PYTHONPATH"))
    }
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{project}",
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        REDIS_URL="memory://",
        DATABASE_URL=f"sqlite+aiosqlite:///{project}/docs.db",
        PYTHONWARNINGS="error::RuntimeWarning",
    )
    return env


def test_snippets_are_found_and_marks_have_reasons() -> None:
    assert len(SNIPPETS) >= 20
    for snippet in SNIPPETS:
        assert snippet.not_run is None or snippet.not_run.strip(), f"{snippet.id}: not-run needs a reason"
    skipped = [s for s in SNIPPETS if s.not_run is not None]
    assert len(skipped) <= len(SNIPPETS) // 3, [s.id for s in skipped]  # deliberately few


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet_runs(snippet: Snippet, project: Path) -> None:
    if snippet.not_run is not None:
        pytest.skip(f"not-run: {snippet.not_run}")
    script = project / ("snippet.py" if snippet.language == "python" else "snippet.sh")
    script.write_text(snippet.code, encoding="utf-8")
    if snippet.language == "python":
        argv = [sys.executable, str(project / "_run_snippet.py"), str(script), snippet.id]
    else:
        argv = ["bash", "-euo", "pipefail", str(script)]
    proc = subprocess.Popen(
        argv, cwd=project, env=_env(project), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _check_snippet(snippet, proc)
    finally:  # whatever ended the test (failure, interrupt), the snippet's processes end with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _check_snippet(snippet: Snippet, proc: subprocess.Popen[str]) -> None:
    try:
        output, _ = proc.communicate(timeout=snippet.run_for or 120)
    except subprocess.TimeoutExpired:
        if snippet.run_for is None:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            pytest.fail(f"{snippet.id} did not finish in 120 s:\n{output}")
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        assert "Traceback" not in output, f"{snippet.id}:\n{output}"
        assert " error:" not in output, f"{snippet.id}:\n{output}"
        return
    assert proc.returncode == 0, f"{snippet.id} exited with {proc.returncode}:\n{output}"
    assert "Traceback" not in output, f"{snippet.id}:\n{output}"
