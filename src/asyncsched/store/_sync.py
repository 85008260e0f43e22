"""The sync ``History``: execution history and the event log for sync code, through the portal."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from .._lifetime import Facade
from .._portal import portal
from ..config import Settings, get_settings
from ._database import Database
from ._repository import EventRepository, ExecutionRepository, Page, PruneResult, prune
from .models import EventMessage, TaskExecution

__all__ = ["History"]


class History(Facade[Database]):
    """Sync reads of the SQL history (Flask/Django views, scripts), delegating to the async repositories.

    ``History(database_url=None, *, settings=None)``; use as a context manager or call :meth:`close`. The
    async :class:`Database` is created on the facade's private loop on first use (a SQLite database is
    migrated then, as on the async side).
    """

    def __init__(self, database_url: str | None = None, *, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._url = database_url or self.settings.database_url

    async def _open(self) -> Database:
        db = Database(self._url, settings=self.settings)
        return await db.__aenter__()  # a SQLite database is migrated here, as on the async side

    def _call(self, repo: str, method: str, *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            db = await self._opened()
            target = ExecutionRepository(db) if repo == "executions" else EventRepository(db)
            return await getattr(target, method)(*args, **kwargs)

        return portal().call(run)

    def migrate(self) -> None:
        """``alembic upgrade head`` (see :meth:`Database.migrate`)."""

        async def run() -> None:
            await (await self._opened()).migrate()

        portal().call(run)

    def executions(
        self,
        agent_name: str | None = None,
        status: str | Iterable[str] | None = None,
        task_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
        **filters: Any,
    ) -> Page[TaskExecution]:
        """See :meth:`ExecutionRepository.list`."""
        page: Page[TaskExecution] = self._call(
            "executions", "list", agent_name, status, task_id, since, until, offset, limit, **filters
        )
        return page

    def execution(self, id_or_job_id: str) -> TaskExecution:
        """See :meth:`ExecutionRepository.get` (raises ``ExecutionNotFound``)."""
        row: TaskExecution = self._call("executions", "get", id_or_job_id)
        return row

    def events(
        self,
        event_type: str | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
        **filters: Any,
    ) -> Page[EventMessage]:
        """See :meth:`EventRepository.list`."""
        page: Page[EventMessage] = self._call(
            "events", "list", event_type, agent, since, offset, limit, **filters
        )
        return page

    def prune(self, older_than: timedelta | datetime) -> PruneResult:
        """Retention: see :func:`asyncsched.store.prune`."""

        async def run() -> PruneResult:
            return await prune(await self._opened(), older_than)

        return portal().call(run)
