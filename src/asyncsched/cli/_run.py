"""``asyncsched run``: scheduler, worker, event bus, recorder and HTTP API in one process.

Runs on the embedded defaults (``memory://`` Redis, a SQLite file) with no configuration, or on real
servers through ``REDIS_URL`` / ``DATABASE_URL``. Ctrl-C (SIGINT) or SIGTERM stops gracefully: the HTTP
server and scheduler stop, running jobs finish, history is flushed. A second Ctrl-C exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from ..config import Settings, set_settings
from ._common import Subcommands

log = logging.getLogger("asyncsched.run")


def register(sub: Subcommands) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="run scheduler, worker, event bus and HTTP API in one process",
        description="Scheduler, worker, event bus, recorder and HTTP API (with the dashboard) in one "
        "process. With no configuration: in-process Redis (memory://) and a local SQLite file.",
    )
    parser.add_argument(
        "--tasks",
        action="append",
        metavar="FILE",
        help="tasks.yaml file to load (repeatable; env ASYNCSCHED_TASKS)",
    )
    parser.add_argument(
        "--agent", help="agent name of the tasks files (env ASYNCSCHED_AGENT; default 'default')"
    )
    parser.add_argument("--host", help="HTTP host (env ASYNCSCHED_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (env ASYNCSCHED_PORT; default 8000)")
    parser.add_argument("--no-http", action="store_true", help="do not serve the HTTP API")
    parser.add_argument("--for", dest="duration", type=float, metavar="SECONDS", help="stop after this long")
    from ..worker._cli import add_hooks_argument

    add_hooks_argument(parser)
    parser.set_defaults(handler=handle)


DEFAULT_TASKS = "tasks.yaml"
"""Loaded from the working directory when no tasks file is named (the spec: "if a tasks.yaml file exists")."""


def handle(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.replace(
        tasks=tuple(args.tasks) if args.tasks else None, agent=args.agent, host=args.host, port=args.port
    )
    if not settings.tasks and os.path.isfile(DEFAULT_TASKS):
        log.info("loading ./%s (found in the working directory; --tasks FILE names another)", DEFAULT_TASKS)
        settings = settings.replace(tasks=(DEFAULT_TASKS,))
    if "ASYNCSCHED_EVENT_LOG" not in os.environ:
        # All in one process with a database at hand: keep every event (also those task functions publish
        # through the sync facade) in the EventMessage table, for the API's event list and the dashboard.
        settings = settings.replace(event_log=True)
    set_settings(settings)
    from ..worker._cli import hooks_option

    hooks = hooks_option(args)
    return asyncio.run(_run(settings, args.duration, http=not args.no_http, hooks=hooks))


class _DropSchedulerFired(logging.Filter):
    """The run log has one line per fired task (with function and queue): drop the scheduler's twin."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("fired ")


async def _run(settings: Settings, duration: float | None, *, http: bool, hooks: str | None = None) -> int:
    from ..runtime import Runtime

    logging.getLogger("asyncsched.scheduler").addFilter(_DropSchedulerFired())

    loop = asyncio.get_running_loop()
    runtime = Runtime(settings, http=http, worker_hooks=hooks)
    interrupted = 0

    def _on_signal(signum: int) -> None:
        nonlocal interrupted
        interrupted += 1
        if interrupted > 1:
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(130)
        log.info("%s received: stopping gracefully (again to force)", signal.Signals(signum).name)
        runtime.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal, sig)
    try:
        async with runtime:
            log.info("asyncsched is running; press Ctrl-C to stop")
            await runtime.wait(duration)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0
