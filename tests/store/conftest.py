"""Fixtures of the store tests: a migrated database on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from asyncsched.store import Database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database: a fresh SQLite file and a fresh PostgreSQL database."""
    async with Database(database_url, auto_migrate=True) as database:
        yield database
