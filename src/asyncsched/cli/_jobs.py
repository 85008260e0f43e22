"""``asyncsched enqueue FUNCTION`` and ``asyncsched jobs list|show|cancel|requeue``: one job at a time.

They talk to Redis directly (the same keys as the API and ``rq``); exit codes in :mod:`._common`.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..config import Settings
from ._common import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Subcommands,
    emit_json,
    fail,
    json_arg,
    print_table,
    run,
    when,
)

STATES = ("queued", "running", "success", "failed", "cancelled", "scheduled", "deferred")


def register(sub: Subcommands) -> None:
    enqueue = sub.add_parser("enqueue", help="enqueue one job of FUNCTION ('package.module:function')")
    enqueue.add_argument("function", metavar="FUNCTION")
    enqueue.add_argument("--args", type=json_arg(list), default=[], help="positional arguments, a JSON array")
    enqueue.add_argument("--kwargs", type=json_arg(dict), default={}, help="keyword arguments, a JSON object")
    enqueue.add_argument("--queue", default=None, help="queue name (default: default)")
    enqueue.add_argument("--delay", type=float, help="run no earlier than this many seconds from now")
    enqueue.add_argument("--timeout", type=int, help="job timeout in seconds")
    enqueue.add_argument("--retry", type=int, help="retries on failure")
    enqueue.add_argument("--json", action="store_true", help="print {job_id, queue, status} as JSON")
    enqueue.set_defaults(handler=handle_enqueue)

    parser = sub.add_parser("jobs", help="list, show, cancel or requeue jobs")
    jobs = parser.add_subparsers(dest="jobs_command", metavar="ACTION")
    listing = jobs.add_parser("list", help="a queue's jobs, newest state first")
    listing.add_argument("--queue", default="default")
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--status", choices=STATES)
    state.add_argument(
        "--failed", action="store_const", const="failed", dest="status", help="= --status failed"
    )
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    listing.add_argument("--json", action="store_true")
    show = jobs.add_parser("show", help="one job: arguments, status, result or traceback, attempts")
    show.add_argument("job_id", metavar="JOB_ID")
    show.add_argument("--json", action="store_true")
    for name, text in (
        ("cancel", "cancel jobs (a running one is stopped)"),
        ("requeue", "requeue failed jobs"),
    ):
        action = jobs.add_parser(name, help=text)
        action.add_argument("job_ids", nargs="+", metavar="JOB_ID")
        action.add_argument("--json", action="store_true")
    parser.set_defaults(handler=handle_jobs, parser=parser)


def handle_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from ..queue import TaskQueue

    async def main() -> int:
        async with TaskQueue(settings=settings) as queue:
            job_id = await queue.enqueue(
                args.function,
                args=args.args,
                kwargs=args.kwargs,
                queue=args.queue,
                delay=args.delay,
                timeout=args.timeout,
                retry=args.retry or None,
            )
        status = "scheduled" if args.delay else "queued"
        if args.json:
            emit_json({"job_id": job_id, "queue": args.queue or "default", "status": status})
        else:
            print(job_id)
        return EXIT_OK

    return run(main)


def handle_jobs(args: argparse.Namespace, settings: Settings) -> int:
    handler = {"list": _list, "show": _show, "cancel": _cancel, "requeue": _requeue}.get(args.jobs_command)
    if handler is None:
        args.parser.print_help()
        return EXIT_USAGE
    if args.jobs_command == "list" and (args.limit < 1 or args.offset < 0):
        return fail("--limit must be at least 1 and --offset at least 0", EXIT_USAGE)

    async def main() -> int:
        from ..queue import TaskQueue

        async with TaskQueue(settings=settings) as queue:
            return await handler(queue, args)

    return run(main)


async def _list(queue: Any, args: argparse.Namespace) -> int:
    from ..queue import JobStatus

    status = JobStatus(args.status) if args.status else None
    records = await queue.list_jobs(args.queue, status, args.offset, args.limit)
    if args.json:
        total = await queue.count_jobs(args.queue, status)
        items = [_brief(r) for r in records]
        emit_json(
            {"queue": args.queue, "items": items, "total": total, "offset": args.offset, "limit": args.limit}
        )
        return EXIT_OK
    rows: list[tuple[Any, ...]] = [("ID", "STATUS", "FUNCTION", "ATTEMPT", "ENQUEUED", "ENDED", "ERROR")]
    rows.extend(
        (r.id, r.status, r.function, r.attempt, when(r.enqueued_at), when(r.ended_at), r.error or "")
        for r in records
    )
    print_table(rows, f"no {args.status or ''} jobs in queue {args.queue!r}".replace("  ", " "))
    return EXIT_OK


def _brief(record: Any) -> dict[str, Any]:
    keys = ("id", "function", "status", "queue", "attempt", "enqueued_at", "started_at", "ended_at", "error")
    return {k: getattr(record, k) for k in keys}


async def _show(queue: Any, args: argparse.Namespace) -> int:
    record = await queue.job(args.job_id)
    if args.json:
        emit_json(dataclasses.asdict(record))
        return EXIT_OK
    fields = [
        ("id", record.id),
        ("function", record.function),
        ("status", f"{record.status} (rq: {record.rq_status})"),
        ("queue", record.queue),
        ("attempt", record.attempt),
        ("args", record.args),
        ("kwargs", record.kwargs),
        ("agent/task", f"{record.agent_name or '-'} / {record.task_name or '-'}"),
        ("enqueued", when(record.enqueued_at)),
        ("started", when(record.started_at)),
        ("ended", when(record.ended_at)),
        ("worker", record.worker_name or "-"),
        ("retries left", "-" if record.retries_left is None else record.retries_left),
    ]
    if record.result is not None:
        fields.append(("result", repr(record.result)))
    if record.error:
        fields.append(("error", record.error))
    for name, value in fields:
        print(f"{name + ':':<13} {value}")
    if record.traceback:
        print("traceback:")
        print(record.traceback.rstrip())
    return EXIT_OK


async def _cancel(queue: Any, args: argparse.Namespace) -> int:
    from ..exceptions import JobNotFound

    results: dict[str, str] = {}
    for job_id in args.job_ids:
        try:
            results[job_id] = "cancelled" if await queue.cancel(job_id) else "already ended"
        except JobNotFound:
            results[job_id] = "not found"
    return _report(results, "cancelled", args.json)


async def _requeue(queue: Any, args: argparse.Namespace) -> int:
    from ..exceptions import JobError, JobNotFound

    results: dict[str, str] = {}
    for job_id in args.job_ids:
        try:
            await queue.requeue(job_id)
            results[job_id] = "queued"
        except JobNotFound:
            results[job_id] = "not found"
        except JobError as exc:
            results[job_id] = f"refused: {exc}"
    return _report(results, "queued", args.json)


def _report(results: dict[str, str], ok: str, as_json: bool) -> int:
    """Each job's outcome; exit 0 if all succeeded, 4 if any was not found, else 1."""
    if as_json:
        emit_json({"results": results})
    else:
        for job_id, outcome in results.items():
            print(f"{job_id}: {outcome}")
    outcomes = set(results.values())
    if outcomes <= {ok}:
        return EXIT_OK
    return 4 if "not found" in outcomes else EXIT_REFUSED
