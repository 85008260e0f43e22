"""nox mirrors CI: `nox -s tests lint typecheck` is what .ci/run checks."""

from __future__ import annotations

import nox

# uv builds a session venv in seconds where pip takes minutes (CI builds four); plain venv where uv is absent.
nox.options.default_venv_backend = "uv|venv"
nox.options.sessions = ["tests", "lint", "typecheck"]

PY = "3.11"


@nox.session(python=PY)
def tests(session: nox.Session) -> None:
    """The whole suite on the embedded backends and real Redis and PostgreSQL."""
    session.install("-e", ".[test]")
    session.run("bash", "scripts/test", *session.posargs, external=True)


@nox.session(python=PY)
@nox.parametrize("rq_version", ["2.0.0", "3.0.0"])
def rq_compat(session: nox.Session, rq_version: str) -> None:
    """RQ interop tests against the oldest supported 2.x and RQ 3."""
    session.install("-e", ".[test]", f"rq=={rq_version}")
    session.run("python", "-m", "pytest", "-m", "rq_compat", *session.posargs)


@nox.session(python=PY)
@nox.parametrize("redis_version", ["5.0.1", "newest"])
def sentinel_compat(session: nox.Session, redis_version: str) -> None:
    """Redis Sentinel (a real master, replica and Sentinel, failover included) on the lowest redis-py the
    package allows and the newest."""
    pin = "redis[hiredis]" if redis_version == "newest" else f"redis[hiredis]=={redis_version}"
    session.install("-e", ".[test]", pin)
    session.run("python", "-m", "pytest", "-m", "sentinel", *session.posargs)


@nox.session(python=PY)
def arq_compat(session: nox.Session) -> None:
    """Jobs of a real arq producer on our worker (the asyncsched[arq] extra; arq pins redis<6)."""
    session.install("-e", ".[test,arq]")
    session.run("python", "-m", "pytest", "-m", "arq", *session.posargs)


@nox.session(python=PY)
def chaos(session: nox.Session) -> None:
    """Fault injection: SIGKILLed workers, Redis and PostgreSQL restarts, malformed input, SIGTERM."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "tests/chaos", *session.posargs)


@nox.session(python=PY)
def uvloop(session: nox.Session) -> None:
    """The worker and event-bus suites again, on uvloop (`--loop=uvloop`, see tests/conftest.py)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "tests/worker", "tests/events", "--loop=uvloop", *session.posargs)


@nox.session(python=PY)
def budgets(session: nox.Session) -> None:
    """Module and function sizes against scripts/budgets-allow.txt, repeated code, mypy strict."""
    session.install("-e", ".[dev]")
    session.run("python", "scripts/budgets.py", *session.posargs)


@nox.session(python=PY)
def mutants(session: nox.Session) -> None:
    """Curated mutation testing (scripts/mutants.py): every critical mutant must be killed.

    `nox -s mutants` runs them all (26 min on a loaded 2-core machine); `nox -s mutants -- --fast` the bugs
    of issue 21's table on real Redis (10-13 min there); `-- --check` (seconds), `-- --only ID,ID`."""
    session.install("-e", ".[test]")
    session.run("python", "scripts/mutants.py", *session.posargs)


@nox.session(python=PY)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PY)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python=PY)
def demo(session: nox.Session) -> None:
    """Run the README's main job for a few seconds on the embedded defaults."""
    session.install("-e", ".")
    session.run("asyncsched", "run", "--tasks", "examples/tasks.yaml", "--for", "5")


@nox.session(python=PY)
def bench(session: nox.Session) -> None:
    """Peer benchmarks (see benchmarks/README.md)."""
    session.install("-e", ".")
    session.run("python", "benchmarks/run.py", *session.posargs)
