"""``asyncsched tasks show|enable|disable|run|edit|delete TASK`` and ``tasks list --json``.

TASK is a task id or name (``--agent`` picks the agent when names repeat). Edits are validated as YAML
definitions are (:meth:`TaskScheduler.update_task`); a YAML-loaded task edited here is overwritten by the
next load of its file.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ._common import EXIT_OK, EXIT_USAGE, Subcommands, emit_json, fail, json_arg, run, when

ACTIONS = ("show", "enable", "disable", "run", "edit", "delete")
_EDITABLE = ("name", "description", "type", "schedule", "timezone", "function", "args", "kwargs", "queue")
if TYPE_CHECKING:
    from ..store import ScheduledTask


def add_parsers(tasks_sub: Subcommands) -> None:
    """Add this module's actions to ``asyncsched tasks``."""
    for name, text in (
        ("show", "one task: definition, state, next runs"),
        ("enable", "enable a task (it fires from its next tick)"),
        ("disable", "disable a task (no replica fires it)"),
        ("run", "enqueue one run of a task now; prints the job id"),
        ("edit", "change fields of a task, validated as in YAML"),
        ("delete", "delete a task (works on a row that cannot be read)"),
    ):
        parser = tasks_sub.add_parser(name, help=text)
        parser.add_argument("task", metavar="TASK", help="task id or name")
        parser.add_argument("--agent", help="the task's agent (when names repeat across agents)")
        parser.add_argument("--json", action="store_true")
        if name == "edit":
            parser.add_argument("--name", help="rename the task")
            parser.add_argument("--description")
            parser.add_argument("--type", choices=("interval", "cron", "date"))
            parser.add_argument("--schedule", help="cron expression, interval ('5 minutes') or ISO time")
            parser.add_argument("--timezone")
            parser.add_argument("--function", help="'package.module:function'")
            parser.add_argument("--args", type=json_arg(list), help="a JSON array")
            parser.add_argument("--kwargs", type=json_arg(dict), help="a JSON object")
            parser.add_argument("--queue")
            parser.add_argument("--enabled", choices=("yes", "no"), help="enable or disable as well")


def task_dict(task: ScheduledTask) -> dict[str, Any]:
    """A task as plain data (the API's view)."""
    from ..web._serialize import task_to_dict

    return task_to_dict(task)


@asynccontextmanager
async def _scheduler(settings: Settings) -> AsyncIterator[Any]:
    from ..queue import TaskQueue
    from ..scheduler import TaskScheduler
    from ..store import Database

    async with (
        Database(settings=settings) as db,
        TaskQueue(settings=settings) as queue,
        TaskScheduler(settings=settings, db=db, queue=queue) as scheduler,
    ):
        await db.check()
        yield scheduler


def handle(args: argparse.Namespace, settings: Settings) -> int:
    """Run one of :data:`ACTIONS` (or ``list --json``)."""
    actions: dict[str, Callable[[Any, argparse.Namespace], Coroutine[Any, Any, int]]] = {
        "show": _show,
        "enable": _enable,
        "disable": _disable,
        "run": _run,
        "edit": _edit,
        "delete": _delete,
        "list": _list_json,
    }
    action = actions[args.tasks_command]
    if args.tasks_command == "edit" and not _changes(args):
        return fail("give at least one field to change (see asyncsched tasks edit --help)", EXIT_USAGE)

    async def main() -> int:
        async with _scheduler(settings) as scheduler:
            return await action(scheduler, args)

    return run(main)


async def _list_json(scheduler: Any, args: argparse.Namespace) -> int:
    emit_json({"items": [task_dict(t) for t in await scheduler.list_tasks(args.agent)]})
    return EXIT_OK


async def _show(scheduler: Any, args: argparse.Namespace) -> int:
    task = await scheduler.get_task(args.task, agent_name=args.agent)
    data = task_dict(task)
    data["next_runs"] = await scheduler.next_runs(task, 5) if task.enabled else []
    if args.json:
        emit_json(data)
        return EXIT_OK
    for key in ("id", "agent_name", "name", "description", "enabled", "type", "schedule", "timezone",
                "function", "args", "kwargs", "queue", "options", "source"):  # fmt: skip
        print(f"{key + ':':<13} {data[key]}")
    print(f"{'last run:':<13} {when(task.last_run_at)}")
    print(f"{'next runs:':<13} {', '.join(when(t) for t in data['next_runs']) or '(disabled)'}")
    return EXIT_OK


async def _enable(scheduler: Any, args: argparse.Namespace) -> int:
    return _print_task(await scheduler.enable(args.task, agent_name=args.agent), args, "enabled")


async def _disable(scheduler: Any, args: argparse.Namespace) -> int:
    return _print_task(await scheduler.disable(args.task, agent_name=args.agent), args, "disabled")


async def _delete(scheduler: Any, args: argparse.Namespace) -> int:
    task = await scheduler.unregister_task(args.task, agent_name=args.agent)
    if args.json:
        emit_json({"id": task.id, "agent_name": task.agent_name, "name": task.name, "deleted": True})
    else:
        print(f"{task.agent_name}/{task.name} ({task.id}): deleted")
    return EXIT_OK


async def _run(scheduler: Any, args: argparse.Namespace) -> int:
    task = await scheduler.checked_task(args.task, agent_name=args.agent)  # BrokenTask names the field
    job_id = await scheduler.run_now(task)
    if args.json:
        emit_json({"job_id": job_id, "task_id": task.id, "status": "queued"})
    else:
        print(job_id)
    return EXIT_OK


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    changes = {k: getattr(args, k) for k in _EDITABLE if getattr(args, k, None) is not None}
    if getattr(args, "enabled", None) is not None:
        changes["enabled"] = args.enabled == "yes"
    return changes


async def _edit(scheduler: Any, args: argparse.Namespace) -> int:
    from ..scheduler._rename import check_rename

    task = await scheduler.get_task(args.task, agent_name=args.agent)
    changes = _changes(args)
    await check_rename(scheduler, task, changes.get("name"))
    stored = await scheduler.update_task(task.id, agent_name=task.agent_name, **changes)
    return _print_task(stored, args, "updated")


def _print_task(task: Any, args: argparse.Namespace, verb: str) -> int:
    if args.json:
        from ..web._serialize import display_item

        emit_json(display_item(task, task_dict))  # a row that cannot be read shows its key and why
    else:
        state = f"next run {when(task.next_run_at)}" if task.enabled else "disabled"
        print(f"{task.agent_name}/{task.name} ({task.id}): {verb}; {state}")
    return EXIT_OK
