"""One line, not a traceback, for the errors an operator can fix (``--debug`` shows the traceback).

Errors of asyncsched's own tree already carry their fix. Backend errors (Redis, SQL drivers, the network)
are summarised by their first line, with the fix when it is known (a missing table: ``asyncsched db
upgrade``). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import traceback

from .exceptions import AsyncschedError

__all__ = ["MISSING_SCHEMA_HINT", "is_operational", "report"]

_BACKENDS = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "redis", "alembic", "psycopg")

MISSING_SCHEMA_HINT = "the database is not migrated: run `asyncsched db upgrade` (or asyncsched.init_db())"


def is_operational(exc: BaseException) -> bool:
    """Whether ``exc`` is an operational error (configuration, backend, network) rather than a bug."""
    if isinstance(exc, AsyncschedError | OSError | TimeoutError):
        return True
    return any(type(exc).__module__.startswith(name) for name in _BACKENDS)


def _summary(exc: BaseException) -> str:
    if isinstance(exc, AsyncschedError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    lowered = str(exc).lower()
    missing = "does not exist" in lowered and ("relation" in lowered or "table" in lowered)
    if missing or "no such table" in lowered:
        text += f" ({MISSING_SCHEMA_HINT})"
    return text


def report(exc: BaseException, prog: str, *, debug: bool) -> int:
    """Print ``exc`` for the user of ``prog`` and return the exit code (2); re-raise bugs."""
    original = exc
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:  # one failure in a task group
        exc = exc.exceptions[0]
    if not is_operational(exc):
        raise original
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    hint = "" if debug or isinstance(exc, AsyncschedError) else " (--debug shows the traceback)"
    print(f"{prog}: error: {_summary(exc)}{hint}", file=sys.stderr)
    return 2
