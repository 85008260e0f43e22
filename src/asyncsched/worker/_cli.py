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

from .._control import ControlPlane, warn_if_memory
from .._redis import check_redis
from .._redis._durability import warn_if_redis_may_lose_data
from .._supervise import Supervised
from ..config import Settings
from ..exceptions import ConfigurationError
from ._worker import ORPHAN_POLICIES, Worker

__all__ = ["add_arguments", "add_hooks_argument", "hooks_option", "run_worker"]

log = logging.getLogger("asyncsched.worker")


def add_arguments(parser: argparse.ArgumentParser, *, with_scheduler: bool = False) -> None:
    """Add the worker's options to ``parser``; ``with_scheduler`` is the default of ``--with-scheduler``."""
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
    word = "default, except with --burst" if with_scheduler else "default off"
    plane = parser.add_mutually_exclusive_group()
    plane.add_argument(
        "--with-scheduler",
        dest="with_scheduler",
        action="store_true",
        help="also run the control plane in this process: fire scheduled tasks, record job history into "
        f"the database (DATABASE_URL) and publish task.* events, like `rq worker --with-scheduler` ({word}; "
        "safe with any number of workers)",
    )
    plane.add_argument(
        "--no-scheduler",
        dest="with_scheduler",
        action="store_false",
        help="only run jobs (another process, e.g. `asyncsched scheduler`, runs the control plane)"
        + (" (default)" if not with_scheduler else ""),
    )
    parser.set_defaults(with_scheduler=None, scheduler_default=with_scheduler)
    tasks_help = "tasks.yaml to register at start (with the scheduler)"
    parser.add_argument("--tasks", action="append", metavar="FILE", help=tasks_help)
    parser.add_argument("--agent", help="agent name of the --tasks files (env ASYNCSCHED_AGENT)")
    parser.add_argument(
        "--arq",
        metavar="MODULE:WORKERSETTINGS",
        help="also run jobs of arq producers, with the functions of this arq WorkerSettings",
    )
    parser.add_argument(
        "--arq-serializer", choices=("pickle", "json"), default="pickle", help="arq jobs' serializer"
    )
    add_hooks_argument(parser)
    from .. import _sidecars

    _sidecars.add_flags(parser, default=None)
    from .. import _metrics

    _metrics.add_flags(parser)


def add_hooks_argument(parser: argparse.ArgumentParser) -> None:
    """``--hooks MODULE:OBJECT`` (also used by ``asyncsched run``)."""
    parser.add_argument(
        "--hooks",
        metavar="MODULE:OBJECT",
        help="worker hooks: a class or factory defined in MODULE whose result has on_startup, on_shutdown, "
        "before_job and/or after_job (docs/queue.md, Worker hooks)",
    )


def hooks_option(args: argparse.Namespace) -> str | None:
    """The ``--hooks`` reference; the working directory is importable then (like ``rq worker``)."""
    reference: str | None = getattr(args, "hooks", None)
    if reference and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return reference


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
        hooks=hooks_option(args),
    )

    plane = _control_plane(args, settings, worker)
    warn_if_memory(settings, "worker")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        await check_redis(worker.redis, settings.redis_url)  # unreachable: one clear line, exit 2
        await warn_if_redis_may_lose_data(worker.redis, settings, "worker")
        async with AsyncExitStack() as stack:
            from .. import _metrics

            worker.metrics = await _metrics.expose(
                stack, args, worker.redis, settings.key_prefix, worker=True
            )
            if plane is not None:
                await stack.enter_async_context(plane)
            else:
                log.info(
                    "control plane not in this process (--no-scheduler): schedules fire, history is "
                    "recorded and task.* events are published only where one runs"
                )
            async with worker:
                await supervised_run(worker)

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


async def supervised_run(worker: Worker) -> None:
    """Run ``worker`` under a supervisor until it is asked to stop (or, in burst mode, its run returns): a
    crash of its loop is logged and the loop restarted with backoff instead of ending the process."""
    runner = Supervised("asyncsched-worker", worker.run, done=lambda: worker.burst or worker._stop.is_set())
    task = runner.start().task
    assert task is not None
    try:
        await asyncio.shield(task)
    finally:
        await runner.stop()


def _control_plane(args: argparse.Namespace, settings: Settings, worker: Worker) -> ControlPlane | None:
    """The control plane the options ask for (``None``: none), validated before anything starts."""
    scheduler = getattr(args, "with_scheduler", None)
    if scheduler is None:  # a burst worker exits when the queues are empty: no schedules unless asked
        scheduler = bool(getattr(args, "scheduler_default", False)) and not args.burst
    history = getattr(args, "history", None)
    events = getattr(args, "events", None)
    history = scheduler if history is None else history
    events = scheduler if events is None else events
    tasks = getattr(args, "tasks", None) or ()
    if tasks and not scheduler:
        raise ConfigurationError("--tasks needs the scheduler in this process: add --with-scheduler")
    if not (scheduler or history or events):
        return None
    if os.getcwd() not in sys.path:  # task functions of the project we are started in (like `rq worker`)
        sys.path.insert(0, os.getcwd())
    return ControlPlane(
        worker.redis,
        settings=settings,
        scheduler=scheduler,
        history=history,
        events=events,
        tasks=tasks,
        agent=getattr(args, "agent", None),
        component="worker",
    )


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
