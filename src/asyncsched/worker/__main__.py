"""``python -m asyncsched.worker [QUEUE ...]``: the spec's worker command.

Unlike the lean ``asyncsched worker``, the spec form runs the control plane by default (``--with-scheduler``:
schedules fire, history is recorded, ``task.*`` events are published), because the spec's deployment is an
app that registers tasks plus this worker and nothing else; ``--no-scheduler`` runs jobs only.
"""

from __future__ import annotations

import argparse
import sys

from ..config import configure_from_flags
from ._cli import add_arguments, run_worker


def main(argv: list[str] | None = None) -> int:
    """Parse options, configure logging and run a worker."""
    parser = argparse.ArgumentParser(
        prog="python -m asyncsched.worker", description="Run an asyncsched worker."
    )
    parser.add_argument("--redis-url", help="Redis URL (env REDIS_URL)")
    parser.add_argument("--key-prefix", help="Redis key prefix (env ASYNCSCHED_KEY_PREFIX / RQ_KEY_PREFIX)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (env ASYNCSCHED_LOG_LEVEL)")
    parser.add_argument("--database-url", help="database URL (env DATABASE_URL; default SQLite file)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of operational errors")
    add_arguments(parser, with_scheduler=True)
    args = parser.parse_args(argv)
    try:
        settings = configure_from_flags(args)
        return run_worker(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # operational errors are one line (--debug: the traceback); bugs re-raise
        from .._operator_errors import report

        return report(exc, "asyncsched worker", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
