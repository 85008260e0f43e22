"""The ``asyncsched`` command line: one subcommand per module in this package.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets ``handler`` to a
function ``(args, settings) -> int``. Errors of asyncsched's own tree print as one line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .._version import __version__
from ..config import configure_from_flags
from ..exceptions import AsyncschedError
from . import _db, _errors, _events, _info, _jobs, _queues, _run, _scheduler, _suspend, _tasks, _worker

__all__ = ["build_parser", "main"]

_COMMANDS = (_run, _worker, _scheduler, _tasks, _db, _info, _events, _jobs, _queues, _suspend)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="asyncsched",
        description="Asyncio background jobs on python-rq's Redis format: queue, scheduler, event bus.",
    )
    parser.add_argument("--version", action="version", version=f"asyncsched {__version__}")
    parser.add_argument("--redis-url", help="Redis URL (env REDIS_URL; default memory://)")
    parser.add_argument("--database-url", help="database URL (env DATABASE_URL; default SQLite file)")
    parser.add_argument("--key-prefix", help="Redis key prefix (env ASYNCSCHED_KEY_PREFIX; default rq)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (env ASYNCSCHED_LOG_LEVEL)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of operational errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asyncsched`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        settings = configure_from_flags(args, datefmt="%H:%M:%S")
    except AsyncschedError as exc:
        print(f"asyncsched: error: {exc}", file=sys.stderr)
        return 2
    if logging.getLogger().level > logging.DEBUG:
        # Alembic narrates every migration step at INFO; one line from us says the schema is ready.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        code: int = args.handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # operational errors are one line (--debug: the traceback); bugs re-raise
        return _errors.report(exc, "asyncsched", debug=args.debug)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
