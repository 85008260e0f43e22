"""Migrations: shipped in the package, they produce exactly the models' schema on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from asyncsched.store import Base, Database, MigrationError
from asyncsched.store._migrate import MIGRATIONS, VERSION_TABLE

HEAD = "0005_partial_link_indexes"
"""The newest shipped revision (the chain: 0001 -> 0002_interval_anchor -> 0003_history_page_indexes ->
0004_execution_progress -> 0005_partial_link_indexes)."""


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_migrations_produce_exactly_the_models_schema(database_url: str) -> None:
    async with Database(database_url, auto_migrate=False) as db:
        assert await db.current_revision() is None
        await db.migrate()
        assert await db.current_revision() == db.head_revision() == HEAD
        assert await db.schema_diff() == []
        assert await _tables(db) == {*Base.metadata.tables, VERSION_TABLE}


async def test_schema_diff_sees_a_difference(database_url: str) -> None:
    """The equality check is not vacuous: a missing index is reported."""
    async with Database(database_url, auto_migrate=True) as db:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP INDEX ix_task_execution_queue_page"))
        diff = await db.schema_diff()
        assert [d[0] for d in diff] == ["add_index"]
        assert diff[0][1].name == "ix_task_execution_queue_page"


async def test_migrate_is_idempotent_and_downgrades(database_url: str) -> None:
    async with Database(database_url, auto_migrate=True) as db:
        await db.migrate()
        await db.downgrade("base")
        assert await _tables(db) == {VERSION_TABLE}
        assert await db.current_revision() is None
        await db.migrate()
        assert await db.schema_diff() == []


async def test_concurrent_first_migrations(database_url: str) -> None:
    """Several components of one process migrating at once (alembic's globals are guarded)."""
    dbs = [Database(database_url, auto_migrate=False) for _ in range(3)]
    try:
        await asyncio.gather(*(d.migrate() for d in dbs))
        assert await dbs[0].current_revision() == HEAD
    finally:
        for d in dbs:
            await d.aclose()


async def test_embedded_first_use_creates_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "asyncsched.db"
    async with Database(f"sqlite:///{path}") as db:  # SQLite: migrated on entry
        assert db.dialect == "sqlite"
        assert path.exists()
        assert await db.current_revision() == HEAD
    async with Database(f"sqlite:///{path}") as db:  # second use: nothing to do
        assert await db.schema_diff() == []


async def test_postgres_is_not_migrated_implicitly(real_database_url: str) -> None:
    async with Database(real_database_url) as db:
        assert db.auto_migrate is False
        assert await db.current_revision() is None


def test_migrations_ship_inside_the_package() -> None:
    assert MIGRATIONS.is_dir()
    assert (MIGRATIONS / "env.py").is_file()
    assert (MIGRATIONS / "script.py.mako").is_file()
    assert sorted(p.name for p in (MIGRATIONS / "versions").glob("[0-9]*.py")) == [
        "0001_initial.py",
        "0002_interval_anchor.py",
        "0003_history_page_indexes.py",
        "0004_execution_progress.py",
        "0005_partial_link_indexes.py",
    ]


async def test_a_schema_made_with_create_all_is_adopted(database_url: str) -> None:
    """Tables created by ``Base.metadata.create_all`` (no history) are stamped at head, not recreated."""
    async with Database(database_url, auto_migrate=False) as db:
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        await db.migrate()
        assert await db.current_revision() == HEAD
        assert await db.schema_diff() == []


async def test_a_different_schema_without_history_is_refused(database_url: str) -> None:
    async with Database(database_url, auto_migrate=False) as db:
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.tables["asyncsched_event_messages"].create)
        with pytest.raises(MigrationError, match="missing tables"):
            await db.migrate()
        assert await db.current_revision() is None


_MIGRATE_SCRIPT = """
import asyncio, sys
from asyncsched.store import Database

async def main():
    async with Database(sys.argv[1], auto_migrate=False) as db:
        await db.migrate()
        print(await db.current_revision())

asyncio.run(main())
"""


async def test_processes_racing_to_create_the_schema(database_url: str) -> None:
    """Several processes starting at once on a fresh database: one creates the schema, the others wait."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _MIGRATE_SCRIPT,
            database_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [await p.communicate() for p in procs]
    assert [(p.returncode, out.decode().strip()) for p, (out, _) in zip(procs, outputs, strict=True)] == [
        (0, HEAD)
    ] * 4, [err.decode()[-500:] for _, err in outputs]
    async with Database(database_url, auto_migrate=False) as db:
        assert await db.schema_diff() == []


def test_the_alembic_command_line_path(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """env.py run by Alembic itself (no connection handed in): online through an async engine, and offline
    (``--sql``) as a script."""
    from alembic import command

    from asyncsched.store._migrate import alembic_config

    config = alembic_config()
    config.set_main_option("sqlalchemy.url", database_url)
    command.upgrade(config, "head", sql=True)
    assert "CREATE TABLE asyncsched_task_executions" in capsys.readouterr().out
    command.upgrade(config, "head")

    async def check() -> None:
        async with Database(database_url, auto_migrate=False) as db:
            assert await db.current_revision() == HEAD
            assert await db.schema_diff() == []

    asyncio.run(check())


def test_the_head_a_database_is_checked_against_is_alembics() -> None:
    from asyncsched.store import _database, _migrate

    assert _database.HEAD_REVISION == _migrate.head_revision() == HEAD
    assert _database.VERSION_TABLE == VERSION_TABLE


_ENTER = """
import asyncio, sys
from asyncsched.store import Database

async def main(url):
    async with Database(url, auto_migrate=True):
        print("alembic" in sys.modules)

asyncio.run(main(sys.argv[1]))
"""


def _enter(url: str) -> bool:
    """Whether entering a migrating ``Database`` on ``url`` in a fresh process imported Alembic."""
    import subprocess

    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {"PYTHONPATH": src}
    cmd = [sys.executable, "-c", _ENTER, url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip() == "True"


async def test_a_database_at_head_is_entered_without_alembic(database_url: str) -> None:
    """Processes start on a migrated database without importing Alembic (~6.5 MB of every scheduler,
    worker and API process); a database behind head is still migrated on entry."""
    assert await asyncio.to_thread(_enter, database_url)  # new: migrated, so Alembic ran
    async with Database(database_url, auto_migrate=False) as db:
        assert await db.current_revision() == HEAD
    assert not await asyncio.to_thread(_enter, database_url)  # at head: not imported
    async with Database(database_url, auto_migrate=False) as db:
        await db.downgrade("0004_execution_progress")
    assert await asyncio.to_thread(_enter, database_url)  # behind: migrated again
    async with Database(database_url, auto_migrate=False) as db:
        assert await db.current_revision() == HEAD
