"""``asyncsched db``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import Settings


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("db", help="(db: not built yet)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, settings: Settings) -> int:
    print("asyncsched db: not built yet", file=sys.stderr)
    return 2
