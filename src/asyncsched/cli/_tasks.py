"""``asyncsched tasks validate FILE...``, ``asyncsched tasks list`` and ``asyncsched tasks import``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime

from ..config import Settings
from . import _rqscheduler_import, _task_ops
from ._common import Subcommands


def register(sub: Subcommands) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "tasks", help="validate tasks.yaml files, list schedules"
    )
    tasks_sub = parser.add_subparsers(dest="tasks_command", metavar="ACTION")
    validate = tasks_sub.add_parser("validate", help="check tasks.yaml files; exit 1 on any problem")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("--agent", help="agent name (only used in messages)")
    validate.add_argument("--no-import", action="store_true", help="do not import the task functions")
    listing = tasks_sub.add_parser("list", help="every scheduled task with its schedule and next run")
    listing.add_argument("--agent", help="only this agent's tasks")
    listing.add_argument("--json", action="store_true", help="the tasks as JSON (as the API lists them)")
    _task_ops.add_parsers(tasks_sub)
    _rqscheduler_import.add_parser(tasks_sub)
    parser.set_defaults(handler=handle, parser=parser)


def handle(args: argparse.Namespace, settings: Settings) -> int:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if args.tasks_command == "validate":
        return _validate(args.files, args.agent or settings.agent, not args.no_import)
    if args.tasks_command in _task_ops.ACTIONS or (args.tasks_command == "list" and args.json):
        return _task_ops.handle(args, settings)
    if args.tasks_command == "list":
        return asyncio.run(_list(settings, args.agent))
    if args.tasks_command == "import":
        return _rqscheduler_import.handle_import(args, settings)
    args.parser.print_help()
    return 2


def _validate(files: list[str], agent: str, check_import: bool) -> int:
    from ..scheduler import validate_file

    failed = 0
    for path in files:
        tasks, problems = validate_file(path, agent, check_import=check_import)
        if problems:
            failed += 1
            for problem in problems:
                print(problem, file=sys.stderr)
            print(
                f"{path}: {len(problems)} problem(s); nothing from this file would be registered",
                file=sys.stderr,
            )
        else:
            print(f"{path}: ok, {len(tasks)} task(s)")
    return 1 if failed else 0


def _when(dt: datetime | None) -> str:
    return "-" if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def _list(settings: Settings, agent: str | None) -> int:
    from .._control import migrated_database
    from ..scheduler import TaskScheduler, task_trigger

    async with migrated_database(settings) as db, TaskScheduler(settings=settings, db=db) as scheduler:
        tasks = await scheduler.list_tasks(agent)
    rows = [("AGENT", "NAME", "ENABLED", "SCHEDULE", "NEXT RUN", "LAST RUN")]
    now = datetime.now(UTC)
    for task in tasks:
        try:
            trigger = task_trigger(task)
            human = f"{trigger.describe()} [{task.type} {task.schedule!r}]"
            nxt = task.next_run_at or (trigger.next_after(now) if task.enabled else None)
        except Exception as exc:
            human, nxt = f"invalid: {exc}", None
        rows.append(
            (
                task.agent_name,
                task.name,
                "yes" if task.enabled else "no",
                human,
                _when(nxt) if task.enabled else "(disabled)",
                _when(task.last_run_at),
            )
        )
    if len(rows) == 1:
        print("no scheduled tasks" + (f" for agent {agent!r}" if agent else ""))
    else:
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if agent is None:
        await _rqscheduler_import.print_listing(settings)
    return 0
