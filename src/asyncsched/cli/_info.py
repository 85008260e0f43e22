"""``asyncsched info``: backends' health, queues, workers and schedulers, like ``rq info``
(the report itself: :mod:`asyncsched.cli._overview`)."""

from __future__ import annotations

import argparse

from ..config import Settings
from ._common import Subcommands


def register(sub: Subcommands) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "info", help="backends' health, queues with counts, workers and schedulers (exit 3 if unhealthy)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document per refresh")
    parser.add_argument("--interval", type=float, help="refresh every N seconds until Ctrl-C")
    parser.add_argument("--count", type=int, help="with --interval: stop after N refreshes")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, settings: Settings) -> int:
    from ._common import EXIT_USAGE, fail, run
    from ._overview import show

    if args.interval is not None and args.interval <= 0:
        return fail("--interval must be a positive number of seconds", EXIT_USAGE)
    return run(lambda: show(settings, as_json=args.json, interval=args.interval, count=args.count))
