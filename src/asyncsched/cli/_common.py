"""What the operator commands share: exit codes, error mapping, tables and ``--json`` output.

Exit codes (documented in ``docs/operations.md``):

====  ==========================================================================================
0     done
1     refused: the job or task is not in a state that allows the action (e.g. requeue a finished job)
2     usage: bad arguments, invalid JSON or definition, configuration error
3     unavailable: Redis or the database cannot be reached (``info``: one of them is unhealthy)
4     not found: no such job, task or queue
====  ==========================================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._jsonable import json_default
from ..exceptions import (
    BackendUnavailable,
    BrokenTask,
    Conflict,
    DuplicateTask,
    InvalidJob,
    JobError,
    JobNotFound,
    TaskDefinitionError,
    TaskNotFound,
)

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What ``add_subparsers()`` returns: each subcommand module's ``register`` adds its parser to it."""

__all__ = [
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Refused",
    "emit_json",
    "fail",
    "json_arg",
    "print_table",
    "run",
    "when",
]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


Refused = Conflict
"""The action is not allowed in the current state (exit 1): :class:`~asyncsched.exceptions.Conflict`."""


def fail(message: str, code: int) -> int:
    """Print ``message`` as the CLI's one-line error; return ``code``."""
    print(f"asyncsched: error: {message}", file=sys.stderr)
    return code


def _unavailable() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return (
        BackendUnavailable,
        RedisConnectionError,
        RedisTimeoutError,
        OSError,
        OperationalError,
        InterfaceError,
    )


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main()`` and map the library's errors to the documented exit codes."""
    try:
        return asyncio.run(main())
    except (JobNotFound, TaskNotFound) as exc:
        return fail(str(exc).strip("'\""), EXIT_NOT_FOUND)
    except BrokenTask as exc:  # the stored task cannot be enabled or run as it is
        return fail(str(exc), EXIT_REFUSED)
    except (TaskDefinitionError, InvalidJob) as exc:
        return fail(str(exc), EXIT_USAGE)
    except (Refused, DuplicateTask, JobError) as exc:
        return fail(str(exc), EXIT_REFUSED)
    except _unavailable() as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        return fail(f"backend unavailable: {type(exc).__name__}: {first}", EXIT_UNAVAILABLE)


def json_arg(kind: type) -> Callable[[str], Any]:
    """An argparse ``type=`` parsing a JSON value of ``kind`` (``list`` or ``dict``), naming the problem."""
    import argparse

    def parse(text: str) -> Any:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"invalid JSON: {exc}") from None
        if not isinstance(value, kind):
            raise argparse.ArgumentTypeError(f"expected a JSON {'array' if kind is list else 'object'}")
        return value

    return parse


def emit_json(data: object) -> None:
    """``data`` as one JSON document on stdout (as the API writes it: datetimes ISO 8601, durations in
    seconds, dataclasses as objects, anything else ``repr``)."""
    print(json.dumps(data, default=json_default, ensure_ascii=False, indent=2))


def when(dt: datetime | None) -> str:
    """A time for a table cell (UTC, to the second; ``-`` when unknown)."""
    return "-" if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_table(rows: Sequence[Sequence[Any]], empty: str) -> None:
    """Rows (the first is the header) as aligned columns, or ``empty`` when there is only the header."""
    if len(rows) <= 1:
        print(empty)
        return
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
