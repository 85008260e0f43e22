"""The database handle every store component shares: one engine, sessions, migrations."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .._lifetime import Closing
from ..config import Settings, get_settings
from .engine import check_database, create_engine, normalize_database_url

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["Database"]

log = logging.getLogger("asyncsched.store")

_MIGRATE_LOCK = 0x61737963  # pg_advisory_xact_lock key: one migrating process at a time

HEAD_REVISION = "0005_partial_link_indexes"
"""The newest migration shipped (``store/migrations/versions``; a test holds it to Alembic's own answer): a
database already there is not migrated, and Alembic (~6.5 MB of modules) is never imported."""
VERSION_TABLE = "asyncsched_alembic_version"
"""Our own version table, so an application's Alembic history can share the database."""


def _migrate() -> ModuleType:
    """``store._migrate`` (Alembic), imported on first use only."""
    from . import _migrate as module

    return module


_loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _alembic_lock() -> asyncio.Lock:
    """Alembic keeps its running context in module globals: one migration at a time per event loop."""
    loop = asyncio.get_running_loop()
    lock = _loop_locks.get(loop)
    if lock is None:
        lock = _loop_locks[loop] = asyncio.Lock()
    return lock


class Database(Closing):
    """The SQL database of asyncsched: an async engine, a session factory and the migrations.

    ``async with Database(url) as db:`` — the URL defaults to ``settings.database_url``. The embedded
    default (SQLite) is created and migrated on entry (``auto_migrate=None`` means "when SQLite"); a
    PostgreSQL database is migrated explicitly (``asyncsched db upgrade`` or :meth:`migrate`), as
    production deployments usually want. Leaving the block disposes of the engine (unless it was given).
    """

    engine: AsyncEngine

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        engine: AsyncEngine | None = None,
        auto_migrate: bool | None = None,
        **engine_options: Any,
    ) -> None:
        self.settings = settings or get_settings()
        if engine is not None:
            self.engine = engine
            self._owns_engine = False
        else:
            self.engine = create_engine(
                normalize_database_url(url or self.settings.database_url), **engine_options
            )
            self._owns_engine = True
        self.url = self.engine.url
        self._sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )
        self.auto_migrate = self.dialect == "sqlite" if auto_migrate is None else auto_migrate

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def session(self) -> AsyncSession:
        """A new session (``async with db.session() as s:``); objects stay usable after commit."""
        return self._sessions()

    async def check(self) -> None:
        """Connect once; raise :class:`~asyncsched.BackendUnavailable` naming host and port on failure."""
        await check_database(self.engine)

    async def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (``alembic upgrade``). A missing SQLite file is created.

        Safe to call on every start: at head it does nothing. Concurrent callers are serialised (an
        advisory lock on PostgreSQL, an exclusive transaction on SQLite), so several processes may start
        at once; on SQLite the whole migration commits or rolls back as one transaction.
        """
        if revision in ("head", HEAD_REVISION) and await self._at_head():
            return
        for attempt in range(1, 11):
            try:
                async with _alembic_lock(), self.engine.begin() as conn:
                    if self.dialect == "postgresql":
                        await conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATE_LOCK})"))
                    else:  # one writer at a time, and the DDL commits (or not) as a whole
                        await conn.exec_driver_sql("BEGIN EXCLUSIVE")
                    await conn.run_sync(_migrate().upgrade, revision)
                return
            except OperationalError as exc:
                # SQLite: another process held the database longer than the busy timeout; try again.
                if self.dialect != "sqlite" or attempt == 10:
                    raise
                log.info("SQLite migration raced another process (%s); retrying", exc.orig)
                await asyncio.sleep(0.2 * attempt)

    async def _at_head(self) -> bool:
        """Whether the version table names :data:`HEAD_REVISION` (on any error, e.g. no table yet: no)."""
        try:
            async with self.engine.connect() as conn:
                found = await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
                return [row[0] for row in found] == [HEAD_REVISION]
        except Exception:
            return False

    async def downgrade(self, revision: str) -> None:
        """``alembic downgrade`` to ``revision`` (``"base"`` drops every asyncsched table)."""
        async with _alembic_lock(), self.engine.begin() as conn:
            await conn.run_sync(_migrate().downgrade, revision)

    async def current_revision(self) -> str | None:
        """The revision the database is at, ``None`` if it was never migrated."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(_migrate().current)

    @staticmethod
    def head_revision() -> str | None:
        """The newest revision this version of asyncsched ships."""
        head: str | None = _migrate().head_revision()
        return head

    async def schema_diff(self) -> list[Any]:
        """Alembic's differences between the live schema and the models (empty when they agree)."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(_migrate().schema_diff)

    async def __aenter__(self) -> Database:
        if self.auto_migrate:
            await self.migrate()
        return self

    async def aclose(self) -> None:
        """Dispose of the engine's connections (when this handle created the engine)."""
        if self._owns_engine:
            await self.engine.dispose()

    def __repr__(self) -> str:
        return f"<Database {self.url.render_as_string(hide_password=True)}>"
