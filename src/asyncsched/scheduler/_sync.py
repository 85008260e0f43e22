"""The synchronous :class:`TaskScheduler`: the async one, called through the portal, not re-implemented."""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._lifetime import SyncClosing
from .._portal import portal
from ..config import Settings
from ..store.models import ScheduledTask
from ._scheduler import TaskScheduler as AsyncTaskScheduler
from ._triggers import Trigger

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ._base import Database

__all__ = ["TaskScheduler"]


class TaskScheduler(SyncClosing):
    """Sync facade of :class:`asyncsched.scheduler.TaskScheduler` for sync code (the spec's startup snippet)::

        scheduler = TaskScheduler()
        tasks = scheduler.load_tasks_from_yaml("tasks.yaml", agent_name="your-agent")
        for task in tasks:
            scheduler.register_task(task)

    Firing happens in ``asyncsched scheduler`` / ``asyncsched run``; this object only edits schedules.
    """

    def __init__(
        self,
        redis: str | aioredis.Redis | None = None,
        *,
        settings: Settings | None = None,
        db: Database | None = None,
    ) -> None:
        self._async = portal().call(self._make, redis, settings, db)

    @staticmethod
    async def _make(
        redis: str | aioredis.Redis | None, settings: Settings | None, db: Database | None
    ) -> AsyncTaskScheduler:
        return AsyncTaskScheduler(redis, settings=settings, db=db)

    def load_tasks_from_yaml(
        self, path: str | os.PathLike[str], agent_name: str | None = None
    ) -> list[ScheduledTask]:
        """Validate a YAML file and return its tasks (unsaved); TaskDefinitionError lists every problem."""
        return portal().call(self._async.load_tasks_from_yaml, path, agent_name)

    def register_task(self, task: ScheduledTask | None = None, /, **definition: Any) -> ScheduledTask:
        """Create or update (by agent and name) one task."""
        return portal().call(self._async.register_task, task, **definition)

    def register_file(
        self, path: str | os.PathLike[str], agent_name: str | None = None
    ) -> list[ScheduledTask]:
        """Validate and register a whole YAML file in one transaction."""
        return portal().call(self._async.register_file, path, agent_name)

    def unregister_task(self, id_or_name: str, agent_name: str | None = None) -> ScheduledTask:
        """Delete a task."""
        return portal().call(self._async.unregister_task, id_or_name, agent_name)

    def enable(self, id_or_name: str, agent_name: str | None = None) -> ScheduledTask:
        """Enable a task."""
        return portal().call(self._async.enable, id_or_name, agent_name)

    def disable(self, id_or_name: str, agent_name: str | None = None) -> ScheduledTask:
        """Disable a task."""
        return portal().call(self._async.disable, id_or_name, agent_name)

    def list_tasks(self, agent_name: str | None = None) -> list[ScheduledTask]:
        """Every task (of one agent)."""
        return portal().call(self._async.list_tasks, agent_name)

    def get_task(self, id_or_name: str, agent_name: str | None = None) -> ScheduledTask:
        """One task by id or name."""
        return portal().call(self._async.get_task, id_or_name, agent_name)

    def update_task(self, id_or_name: str, agent_name: str | None = None, **changes: Any) -> ScheduledTask:
        """Change fields of a task."""
        return portal().call(self._async.update_task, id_or_name, agent_name, **changes)

    def run_now(self, id_or_name: str | ScheduledTask, agent_name: str | None = None) -> str:
        """Enqueue one run now; returns the job id."""
        return portal().call(self._async.run_now, id_or_name, agent_name)

    def next_runs(
        self, task: ScheduledTask | Trigger | str, n: int = 5, *, after: datetime | None = None
    ) -> list[datetime]:
        """The next ``n`` fire times."""
        return portal().call(self._async.next_runs, task, n, after=after)

    def close(self) -> None:
        """Close connections (also happens at interpreter exit with the portal)."""
        portal().call(self._async.aclose)
