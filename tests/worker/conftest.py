from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from asyncsched.config import Settings
from asyncsched.queue import TaskQueue


@pytest.fixture
def wsettings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url)


@pytest.fixture
async def queue(redis_url: str, wsettings: Settings) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(redis_url, settings=wsettings) as q:
        yield q
