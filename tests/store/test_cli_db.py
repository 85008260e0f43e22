"""``asyncsched db upgrade | current | prune`` on both databases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from asyncsched.cli import main
from asyncsched.store import Database, EventRepository

HEAD = Database.head_revision()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_upgrade_current_and_prune(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "--database-url", database_url, "db", "current")
    assert code == 1
    assert out.strip() == f"empty (never migrated) (behind head {HEAD}; run `asyncsched db upgrade`)"
    code, out = _run(capsys, "--database-url", database_url, "db", "upgrade")
    assert (code, out.strip()) == (0, f"database migrated from empty to {HEAD}")
    code, out = _run(capsys, "--database-url", database_url, "db", "upgrade")
    assert (code, out.strip()) == (0, f"database is at revision {HEAD} (nothing to do)")
    code, out = _run(capsys, "--database-url", database_url, "db", "current")
    assert (code, out.strip()) == (0, f"{HEAD} (up to date)")

    async def add_events() -> None:
        async with Database(database_url) as db:
            repo = EventRepository(db)
            await repo.add("old", "a", created_at=datetime.now(UTC) - timedelta(days=10))
            await repo.add("new", "a")

    asyncio.run(add_events())
    code, out = _run(capsys, "--database-url", database_url, "db", "prune", "--older-than", "7")
    assert (code, out.strip()) == (0, "pruned 0 executions and 1 events older than 7 days")


def test_unreachable_database_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.servers import free_port

    url = f"postgresql://u:secret@127.0.0.1:{free_port()}/x"
    code, out = _run(capsys, "--database-url", url, "db", "current")
    assert code == 2
    assert "cannot reach database at 127.0.0.1" in out
    assert "secret" not in out
