"""Alembic, driven programmatically: the migrations ship inside the package, no ``alembic.ini`` needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from ..exceptions import MigrationError
from . import _database
from .models import Base

__all__ = ["MIGRATIONS", "VERSION_TABLE", "MigrationError", "alembic_config", "head_revision", "schema_diff"]

MIGRATIONS = Path(__file__).with_name("migrations")
"""The folder of ``env.py`` and ``versions/``."""

VERSION_TABLE = _database.VERSION_TABLE


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the shipped migrations (and at ``connection`` when given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision shipped with this version of asyncsched."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(connection: Connection, revision: str = "head") -> None:
    """``alembic upgrade`` on an open (sync-facing) connection.

    A database whose tables were made with ``Base.metadata.create_all`` (no migration history) is adopted:
    if its schema is exactly head's, it is stamped at head; if it differs, :class:`MigrationError`.
    """
    config = alembic_config(connection)
    if current(connection) is None:
        existing = set(inspect(connection).get_table_names())
        ours = set(Base.metadata.tables)
        if ours & existing:
            diff = (
                schema_diff(connection) if ours <= existing else [("missing tables", sorted(ours - existing))]
            )
            if diff or revision != "head":
                raise MigrationError(
                    "asyncsched tables exist without migration history and do not match the models "
                    f"(differences: {diff}); back them up and drop them, then run `asyncsched db upgrade`"
                )
            command.stamp(config, "head")
            return
    command.upgrade(config, revision)


def downgrade(connection: Connection, revision: str) -> None:
    """``alembic downgrade`` on an open (sync-facing) connection."""
    command.downgrade(alembic_config(connection), revision)


def current(connection: Connection) -> str | None:
    """The revision the database is at (``None``: never migrated)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def schema_diff(connection: Connection) -> list[Any]:
    """Differences between the database and ``Base.metadata`` (empty when the migrations match the models)."""
    context = MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
    )
    return list(compare_metadata(context, Base.metadata))
