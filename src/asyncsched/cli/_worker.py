"""``asyncsched worker``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import Settings


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("worker", help="(worker: not built yet)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, settings: Settings) -> int:
    print("asyncsched worker: not built yet", file=sys.stderr)
    return 2
