"""Run times waiting for SQL survive a stop that lands in the middle of a flush.

The periodic flush takes the pending run times out of memory before it writes them; a stop (cancel) during
the write used to drop them, so the final flush at shutdown found nothing and ``last_run_at`` stayed empty
in SQL although the task had fired (seen as a flaky ``test_replicas``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from asyncsched.scheduler import TaskScheduler

from .conftest import FUNCTION, Clock

pytestmark = pytest.mark.asyncio


async def test_a_cancelled_flush_keeps_its_run_times_for_the_next(
    scheduler: TaskScheduler, clock: Clock
) -> None:
    task = await scheduler.register_task(name="t", type="interval", schedule="1 minute", function=FUNCTION)
    clock.now = datetime(2030, 1, 1, 12, 1, tzinfo=UTC)
    assert await scheduler.run_pending()
    assert task.id in scheduler._sql_updates  # fired: its run time waits for the next flush

    real_session = scheduler._session
    entered, never = asyncio.Event(), asyncio.Event()

    @contextlib.asynccontextmanager
    async def stalled() -> AsyncIterator[Any]:
        entered.set()
        await never.wait()  # a slow database: the stop arrives during the write
        yield None

    scheduler._session = stalled  # type: ignore[assignment,method-assign]
    flush = asyncio.create_task(scheduler._flush())
    await entered.wait()
    flush.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flush
    scheduler._session = real_session  # type: ignore[method-assign]

    assert task.id in scheduler._sql_updates, "the cancelled flush dropped the run time"
    await scheduler._flush()
    stored = await scheduler.get_task(task.id)
    assert stored.last_run_at is not None


async def test_a_flush_without_a_run_never_erases_a_recorded_one(
    scheduler: TaskScheduler, clock: Clock
) -> None:
    """A replica whose pass ran no tick (its cached copy has no last run) flushes only the next run time: it
    used to write ``last_run_at = NULL`` over the run another replica (or its own earlier pass) recorded."""
    task = await scheduler.register_task(name="t", type="interval", schedule="1 minute", function=FUNCTION)
    clock.now = datetime(2030, 1, 1, 12, 1, tzinfo=UTC)
    assert await scheduler.run_pending()
    await scheduler._flush()
    ran = (await scheduler.get_task(task.id)).last_run_at
    assert ran is not None
    scheduler._sql_updates[task.id] = (None, datetime(2030, 1, 1, 12, 3, tzinfo=UTC))
    await scheduler._flush()
    stored = await scheduler.get_task(task.id)
    assert stored.last_run_at == ran
    assert stored.next_run_at == datetime(2030, 1, 1, 12, 3, tzinfo=UTC)
