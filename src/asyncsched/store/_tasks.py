"""Read access to scheduled-task rows for pages and checks that one bad row must not break.

The scheduler (:class:`asyncsched.scheduler.TaskScheduler`) owns writing tasks; this is what the API lists.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select

from ._database import Database
from ._pages import Page, UnreadableRow, read_page
from .models import ScheduledTask

__all__ = ["TaskRepository"]


class TaskRepository:
    """Scheduled tasks, paged and filtered, each row loaded in isolation when the page cannot be."""

    _ORDER = (ScheduledTask.agent_name, ScheduledTask.name, ScheduledTask.id)

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_for_display(
        self,
        agent_name: str | None = None,
        enabled: bool | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[ScheduledTask | UnreadableRow]:
        """Tasks ordered by agent and name; a row that cannot be loaded is an :class:`UnreadableRow`."""
        where: list[ColumnElement[bool]] = []
        if agent_name is not None:
            where.append(ScheduledTask.agent_name == agent_name)
        if enabled is not None:
            where.append(ScheduledTask.enabled == enabled)
        query = select(ScheduledTask).where(*where)
        return await read_page(self.db, query, self._ORDER, offset, limit, model=ScheduledTask)

    async def functions(self, *, exclude_source: str) -> set[str]:
        """The functions of every task whose ``source`` is not ``exclude_source`` (reads one text column,
        so no other column of any row can make it fail)."""
        query = (
            select(ScheduledTask.function)
            .where(or_(ScheduledTask.source.is_(None), ScheduledTask.source != exclude_source))
            .distinct()
        )
        async with self.db.session() as session:
            return set((await session.scalars(query)).all())
