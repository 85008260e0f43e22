"""``asyncsched suspend`` / ``asyncsched resume``: RQ's worker suspension (the ``<p>:suspended`` key that
``rq suspend`` / ``rq resume`` set), honoured by our workers and RQ's alike."""

from __future__ import annotations

import argparse
import asyncio

from ..config import Settings
from ._common import Subcommands


def register(sub: Subcommands) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "suspend", help="suspend every worker (ours and RQ's): running jobs finish, none start"
    )
    parser.add_argument(
        "--duration", type=int, metavar="SECONDS", help="resume by itself after SECONDS (default: never)"
    )
    parser.set_defaults(handler=handle_suspend)
    parser = sub.add_parser("resume", help="resume suspended workers")
    parser.set_defaults(handler=handle_resume)


def handle_suspend(args: argparse.Namespace, settings: Settings) -> int:
    if args.duration is not None and args.duration < 1:
        print("asyncsched: error: --duration must be at least 1 second")
        return 2
    asyncio.run(_call(settings, "suspend", args.duration))
    until = f" for {args.duration} s" if args.duration else " (asyncsched resume to resume)"
    print(f"workers suspended{until}")
    return 0


def handle_resume(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(_call(settings, "resume", None))
    print("workers resumed")
    return 0


async def _call(settings: Settings, action: str, duration: int | None) -> None:
    from ..queue import TaskQueue

    async with TaskQueue(settings.redis_url, settings=settings) as queue:
        if action == "suspend":
            await queue.suspend_workers(duration)
        else:
            await queue.resume_workers()
