"""SQL engine factory: the URL picks the driver (SQLite via aiosqlite, PostgreSQL via asyncpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from ..exceptions import BackendUnavailable, UnsupportedURL

__all__ = ["check_database", "create_engine", "normalize_database_url", "session_factory"]

_ALIASES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def normalize_database_url(url: str) -> str:
    """Map ``sqlite://`` and ``postgresql://`` to their async drivers; reject anything else."""
    scheme, sep, rest = url.partition("://")
    driver = _ALIASES.get(scheme.lower())
    if not sep or driver is None:
        raise UnsupportedURL(
            f"unsupported database URL {_mask(url)}; use sqlite+aiosqlite:///path.db "
            "or postgresql+asyncpg://user:password@host:port/dbname"
        )
    return f"{driver}://{rest}"


def _mask(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url``. SQLite files get WAL and a busy timeout; their folder is created."""
    url = normalize_database_url(url)
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        options.setdefault("connect_args", {}).setdefault("timeout", 30)
        engine = create_async_engine(url, **options)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # the history's indexes take inserts at random pages (the job id's): a 64 MiB page cache
            # (used as the pages are touched; SQLite's default is 2 MiB) keeps them in memory, and a
            # checkpoint every ~40 MB of WAL (not 4) writes each hot page back once, not ten times
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.execute("PRAGMA wal_autocheckpoint=10000")
            cursor.close()

        return engine
    options.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **options)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """The session factory every repository uses (``expire_on_commit=False``)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def check_database(engine: AsyncEngine) -> None:
    """Connect once; turn failure into one :class:`BackendUnavailable` line naming host and port."""
    from sqlalchemy import text

    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        url = engine.url
        where = f"{url.host}:{url.port or 5432}" if url.host else (url.database or "")
        raise BackendUnavailable(
            f"cannot reach database at {where} ({url.render_as_string(hide_password=True)}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
