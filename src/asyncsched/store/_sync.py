"""The sync ``History``: execution history and the event log for sync code, through the portal."""

from __future__ import annotations

from datetime import datetime, timedelta

from .._lifetime import Facade, blocking
from .._portal import portal
from ..config import Settings, get_settings
from ._database import Database
from ._repository import EventRepository, ExecutionRepository, PruneResult, prune

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

    async def _executions(self) -> ExecutionRepository:
        return ExecutionRepository(await self._opened())

    async def _events(self) -> EventRepository:
        return EventRepository(await self._opened())

    def migrate(self) -> None:
        """``alembic upgrade head`` (see :meth:`Database.migrate`)."""

        async def run() -> None:
            await (await self._opened()).migrate()

        portal().call(run)

    executions = blocking(_executions, ExecutionRepository.list, "See :meth:`ExecutionRepository.list`.")
    execution = blocking(
        _executions,
        ExecutionRepository.get,
        "See :meth:`ExecutionRepository.get` (raises ``ExecutionNotFound``).",
    )
    events = blocking(_events, EventRepository.list, "See :meth:`EventRepository.list`.")

    def prune(self, older_than: timedelta | datetime) -> PruneResult:
        """Retention: see :func:`asyncsched.store.prune`."""

        async def run() -> PruneResult:
            return await prune(await self._opened(), older_than)

        return portal().call(run)
