"""``POST /tasks/bulk``: many new scheduled tasks in one request, through ``TaskScheduler.add_tasks``.

Each item is checked exactly as ``POST /tasks`` checks one (schema, schedule, the function rule, then the
scheduler's own validation; the schedule and the function once per distinct value); the first bad item is
answered 422 with ``loc`` ``["body", "tasks", index, field]`` and nothing is stored; a name given twice or
already stored is 409 and nothing is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import TaskDefinitionError
from ._security import API_SOURCE
from ._validation import FieldError, ValidationFailed

if TYPE_CHECKING:
    from ..scheduler import TaskScheduler

__all__ = ["MAX_ITEMS", "bulk_schemas", "create_tasks"]

MAX_ITEMS = 5000
"""Tasks per request (the 1 MiB body limit holds about this many small definitions); send more in turns."""


def bulk_schemas(task_create: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "TaskCreateBulk": {
            "type": "object",
            "required": ["tasks"],
            "additionalProperties": False,
            "properties": {
                "tasks": {
                    "type": "array",
                    "items": task_create,
                    "maxItems": MAX_ITEMS,
                    "description": "New tasks, stored all or nothing (none may exist yet).",
                }
            },
        },
        "TaskBulkCreated": {
            "type": "object",
            "properties": {
                "count": {"type": "integer"},
                "ids": {"type": "array", "items": {"type": "string"}, "description": "In request order."},
            },
        },
    }


def _at(index: int, errors: list[FieldError]) -> ValidationFailed:
    """``errors`` of one item (``loc`` under ``body``) re-rooted at ``body.tasks.<index>``."""
    for problem in errors:
        problem["loc"] = ["body", "tasks", index, *problem["loc"][1:]]
    return ValidationFailed(errors)


async def create_tasks(
    items: list[dict[str, Any]],
    agent: str,
    validate_schedule: Callable[[dict[str, Any]], list[FieldError]],
    check_function: Callable[[str], Awaitable[None]],
    scheduler: TaskScheduler,
    problems_to_errors: Callable[[TaskDefinitionError, str | None], list[FieldError]],
) -> dict[str, Any]:
    """Validate every item (stopping at the first bad one) and store them all with one ``add_tasks``."""
    from ..scheduler import build_task

    checked: set[str] = set()
    schedules: set[tuple[Any, ...]] = set()  # checked once per distinct schedule (a fleet shares a few)
    definitions: list[dict[str, Any]] = []
    for index, body in enumerate(items):
        schedule = tuple(body.get(k) for k in ("type", "schedule", "timezone", "start"))
        if schedule not in schedules:
            errors = validate_schedule(body)
            if errors:
                raise _at(index, errors)
            schedules.add(schedule)
        if body["function"] not in checked:
            try:
                await check_function(body["function"])
            except ValidationFailed as exc:
                raise _at(index, exc.errors) from None
            checked.add(body["function"])
        definition = {k: v for k, v in body.items() if k != "agent_name" and v is not None}
        definitions.append(
            {"agent_name": body.get("agent_name") or agent, "source": API_SOURCE, **definition}
        )

    def build_all() -> list[Any]:
        tasks = []
        for index, definition in enumerate(definitions):
            try:
                tasks.append(build_task(**definition))  # imports user code, as a single add does
            except TaskDefinitionError as exc:
                raise _at(index, problems_to_errors(exc, None)) from None
        return tasks

    ids = await scheduler.add_tasks(await asyncio.to_thread(build_all))
    return {"count": len(ids), "ids": ids}
