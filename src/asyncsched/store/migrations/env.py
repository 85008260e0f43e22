"""Alembic environment of asyncsched's migrations (async-aware).

Normally run through :meth:`asyncsched.store.Database.migrate` (or ``asyncsched db upgrade``), which hands
this script an open connection in ``config.attributes["connection"]``. Run by the ``alembic`` command
instead, it builds an async engine from ``sqlalchemy.url`` (or ``DATABASE_URL``) and runs the migrations
through ``run_sync``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from asyncsched.config import get_settings
from asyncsched.store._migrate import VERSION_TABLE
from asyncsched.store.engine import create_engine
from asyncsched.store.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if context.is_offline_mode():
        url = context.config.get_main_option("sqlalchemy.url") or get_settings().database_url
        context.configure(
            url=url, target_metadata=Base.metadata, version_table=VERSION_TABLE, literal_binds=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_async(context.config.get_main_option("sqlalchemy.url") or get_settings().database_url))


_main()
