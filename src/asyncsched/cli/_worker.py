"""``asyncsched worker [QUEUE ...]``: run a worker (see ``asyncsched worker --help``)."""

from __future__ import annotations

import argparse

from ..config import Settings
from ..worker._cli import add_arguments, run_worker
from ._common import Subcommands


def register(sub: Subcommands) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "worker", help="run a worker on RQ-format queues (SIGTERM/SIGINT stop it gracefully)"
    )
    add_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, settings: Settings) -> int:
    return run_worker(args, settings)
