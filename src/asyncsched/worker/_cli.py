"""Command-line options of the worker, shared by ``asyncsched worker`` and ``python -m asyncsched.worker``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack, suppress
from typing import Any

from .._redis import check_redis
from ..config import Settings
from ._worker import ORPHAN_POLICIES, Worker

__all__ = ["add_arguments", "run_worker"]

log = logging.getLogger("asyncsched.worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the worker's options to ``parser``."""
    parser.add_argument("queues", nargs="*", metavar="QUEUE", help="queues to listen to, in priority order")
    parser.add_argument("-c", "--concurrency", type=int, help="jobs in flight (env ASYNCSCHED_CONCURRENCY)")
    parser.add_argument("-t", "--threads", type=int, help="threads for sync jobs (env ASYNCSCHED_THREADS)")
    parser.add_argument("-b", "--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument(
        "--serializers",
        default=None,
        help="accepted job serializers: 'json' (default) or 'json,pickle' (pickle runs code from Redis: "
        "only with trusted producers; env ASYNCSCHED_ACCEPT_PICKLE)",
    )
    parser.add_argument("--accept-pickle", action="store_true", help="same as --serializers json,pickle")
    parser.add_argument("-n", "--name", help="worker name (default: host, pid and a random suffix)")
    parser.add_argument("--heartbeat-interval", type=float, default=10.0, help="seconds between heartbeats")
    parser.add_argument("--lease", type=int, default=60, help="seconds a running job's lease lasts unrenewed")
    parser.add_argument(
        "--orphan-policy",
        choices=ORPHAN_POLICIES,
        default="fail",
        help="what happens to jobs of a dead worker: fail (default, at-most-once like RQ) or requeue",
    )
    parser.add_argument("--grace-period", type=float, default=30.0, help="seconds to finish jobs on stop")
    parser.add_argument(
        "--arq",
        metavar="MODULE:WORKERSETTINGS",
        help="also run jobs of arq producers, with the functions of this arq WorkerSettings",
    )
    parser.add_argument(
        "--arq-serializer", choices=("pickle", "json"), default="pickle", help="arq jobs' serializer"
    )
    from ..cli import _sidecars

    _sidecars.add_flags(parser, default=False)


def _accept_pickle(args: argparse.Namespace) -> bool | None:
    if args.accept_pickle:
        return True
    if args.serializers:
        accepted = {s.strip() for s in args.serializers.split(",") if s.strip()}
        unknown = accepted - {"json", "pickle"}
        if unknown:
            raise SystemExit(f"unknown serializer(s): {', '.join(sorted(unknown))}; use json and/or pickle")
        return "pickle" in accepted
    return None


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run a worker until SIGTERM/SIGINT (graceful stop) or, with ``--burst``, until the queues empty."""
    worker = Worker(
        args.queues or None,
        settings=settings,
        concurrency=args.concurrency,
        threads=args.threads,
        burst=args.burst,
        accept_pickle=_accept_pickle(args),
        name=args.name,
        heartbeat_interval=args.heartbeat_interval,
        lease=args.lease,
        orphan_policy=args.orphan_policy,
        grace_period=args.grace_period,
        arq=getattr(args, "arq", None),
        arq_serializer=getattr(args, "arq_serializer", "pickle"),
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        await check_redis(worker.redis, settings.redis_url)  # unreachable: one clear line, exit 2
        async with AsyncExitStack() as stack:
            history, events = getattr(args, "history", False), getattr(args, "events", False)
            if history or events:
                from ..cli import _sidecars

                await _sidecars.enter(
                    stack, worker.redis, settings, component="worker", history=history, events=events
                )
            async with worker:
                await worker.run()

    _run(main)
    stuck = [t for t in threading.enumerate() if t.name.startswith("asyncsched-job") and t.is_alive()]
    if any(_busy(t) for t in stuck):
        # A sync job's thread cannot be interrupted; its job was already put back or recorded, so do not
        # let the interpreter wait for it at exit (that could run it to completion a second time).
        log.warning(
            "exiting with %d sync job thread(s) still running; their results are discarded", len(stuck)
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _busy(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or -1)
    # An idle pool thread waits in the executor's work queue; a busy one is inside a job.
    while frame is not None:
        if frame.f_code.co_name == "run" and "concurrent/futures/thread" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    uvloop: Any = None
    with suppress(ImportError):  # optional speed-up (typed or not, installed or not)
        uvloop = importlib.import_module("uvloop")
    if uvloop is None:  # outside the except block: every later traceback would show the ImportError too
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
