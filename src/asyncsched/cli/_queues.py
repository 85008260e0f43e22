"""``asyncsched queues list|pause|resume|empty|requeue-failed|delete-failed``: whole queues at once."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ._common import EXIT_OK, EXIT_USAGE, Subcommands, emit_json, print_table, run

ACTIONS = {
    "pause": "our workers take no job from the queue until it is resumed",
    "resume": "resume a paused queue",
    "empty": "delete every waiting job of the queue (like rq empty)",
    "requeue-failed": "put every failed job of the queue back on it",
    "delete-failed": "delete every failed job of the queue",
}
if TYPE_CHECKING:
    from ..queue import TaskQueue


def register(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "queues", help="list, pause, resume or empty queues; requeue or delete failed jobs"
    )
    queues = parser.add_subparsers(dest="queues_command", metavar="ACTION")
    listing = queues.add_parser("list", help="queues with job counts per state and paused flag")
    listing.add_argument("--json", action="store_true")
    for name, text in ACTIONS.items():
        action = queues.add_parser(name, help=text)
        action.add_argument("queues", nargs="+", metavar="QUEUE")
        action.add_argument("--json", action="store_true")
    parser.set_defaults(handler=handle, parser=parser)


def handle(args: argparse.Namespace, settings: Settings) -> int:
    command = args.queues_command
    if command is None:
        args.parser.print_help()
        return EXIT_USAGE

    async def main() -> int:
        from ..queue import TaskQueue

        async with TaskQueue(settings=settings) as queue:
            if command == "list":
                return await _list(queue, args.json)
            return await _act(queue, command, args.queues, args.json)

    return run(main)


async def queue_rows(queue: TaskQueue) -> list[dict[str, Any]]:
    """Every known queue with its counts and paused flag (also used by ``asyncsched info``)."""
    counts = await queue.queue_counts()
    paused = await queue.paused(list(counts))
    return [{"name": name, "paused": name in paused, "counts": c} for name, c in sorted(counts.items())]


async def _list(queue: Any, as_json: bool) -> int:
    rows = await queue_rows(queue)
    if as_json:
        emit_json({"items": rows})
        return EXIT_OK
    print_table(queue_table(rows), "no queues")
    return EXIT_OK


def queue_table(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Table rows (header first) of :func:`queue_rows`."""
    states = ("queued", "running", "scheduled", "deferred", "failed", "success", "cancelled")
    table: list[tuple[Any, ...]] = [("QUEUE", *(s.upper() for s in states), "PAUSED")]
    table.extend(
        (row["name"], *(row["counts"].get(s, 0) for s in states), "yes" if row["paused"] else "")
        for row in rows
    )
    return table


async def _act(queue: Any, command: str, names: list[str], as_json: bool) -> int:
    results: dict[str, Any] = {}
    for name in names:
        if command == "pause":
            changed = await queue.pause(name)
            results[name] = {"paused": True, "changed": changed}
            text = "paused" if changed else "already paused"
        elif command == "resume":
            changed = await queue.resume(name)
            results[name] = {"paused": False, "changed": changed}
            text = "resumed" if changed else "was not paused"
        elif command == "empty":
            n = await queue.empty(name)
            results[name] = {"count": n}
            text = f"{n} waiting job(s) deleted"
        elif command == "requeue-failed":
            ids = await queue.requeue_failed(name)
            results[name] = {"count": len(ids), "job_ids": ids}
            text = f"{len(ids)} failed job(s) requeued"
        else:
            n = await queue.delete_failed(name)
            results[name] = {"count": n}
            text = f"{n} failed job(s) deleted"
        if not as_json:
            print(f"{name}: {text}")
    if as_json:
        emit_json({"results": results})
    return EXIT_OK
