"""The one rule for renaming a task, used by the API's ``PATCH /tasks/{id}`` and ``asyncsched tasks edit``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..exceptions import DuplicateTask, TaskNotFound

if TYPE_CHECKING:
    from ..store.models import ScheduledTask
    from ._scheduler import TaskScheduler

__all__ = ["check_rename"]


async def check_rename(scheduler: TaskScheduler, task: ScheduledTask, name: str | None) -> None:
    """Raise :class:`DuplicateTask` when renaming ``task`` to ``name`` would clash with another task of
    its agent (names are unique per agent); nothing when ``name`` is ``None`` or the task's own."""
    if name is None or name == task.name:
        return
    try:
        await scheduler.get_task(name, agent_name=task.agent_name)
    except TaskNotFound:
        return
    raise DuplicateTask(f"a task named {name!r} already exists for agent {task.agent_name!r}")
