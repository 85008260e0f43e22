"""``asyncsched scheduler``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import Settings


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("scheduler", help="(scheduler: not built yet)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, settings: Settings) -> int:
    print("asyncsched scheduler: not built yet", file=sys.stderr)
    return 2
