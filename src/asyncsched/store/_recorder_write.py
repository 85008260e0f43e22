"""How the Recorder writes a batch: one transaction, and when the database refuses it, row by row.

A batch that fails is usually an outage: the error is raised and the entries stay pending in Redis. But
if the same batch keeps failing (``POISON_AFTER`` times) while a probe write succeeds, one row in it is
refused: the batch is then written one row per transaction and only the refused rows are dropped (logged).
An ``IntegrityError``/``DataError`` goes row by row at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ._database import Database
from ._history_rows import ExecutionRow
from ._history_sql import insert_events, upsert_executions
from .models import EventMessage, TaskExecution, _uuid, utcnow

__all__ = ["POISON_AFTER", "BatchWriter", "freeze_gc", "settle", "unfreeze_gc"]

log = logging.getLogger("asyncsched.store.recorder")

POISON_AFTER = 3
"""Failures of one batch, with the database answering, before its rows are tried one by one."""


class BatchWriter:
    """The SQL side of :class:`~asyncsched.store.Recorder` (a base class: tests replace its methods)."""

    db: Database
    failures: int
    _batch_failures: int

    async def _write(self, rows: list[ExecutionRow], events: list[dict[str, Any]]) -> None:
        try:
            async with self.db.engine.begin() as conn:
                await self._upsert(conn, rows)
                await insert_events(conn, events)
        except (IntegrityError, DataError) as exc:
            self.failures += 1
            log.error("history batch refused (%s); writing it row by row", exc)
            await self._isolate(rows, events)
        except Exception:
            # Usually an outage: raise, keep the entries pending, retry. But if the same batch keeps
            # failing while the database answers, one row in it is refused: find it and drop it alone.
            self.failures += 1
            self._batch_failures += 1
            if self._batch_failures < POISON_AFTER or not await self._database_answers():
                raise
            log.error(
                "history batch failed %d times while the database answers; writing row by row",
                self._batch_failures,
            )
            await self._isolate(rows, events)
        self._batch_failures = 0

    async def _upsert(self, conn: AsyncConnection, rows: list[ExecutionRow]) -> None:
        await upsert_executions(conn, rows)

    async def _database_answers(self) -> bool:
        """Whether the database accepts an ordinary write to both tables (probe rows, rolled back).

        Tells a refused row apart from a refused batch: a database that is down, read-only, full, or
        lacks the tables (not migrated) fails the probe too, so nothing is dropped for those.
        """
        now = utcnow()
        try:
            async with self.db.engine.connect() as conn:
                trans = await conn.begin()
                try:
                    await conn.execute(
                        insert(TaskExecution).values(
                            id=_uuid(), job_id=f"probe-{_uuid()}", queue="probe", status="queued",
                            attempt=1, created_at=now, updated_at=now,
                        )
                    )  # fmt: skip
                    await conn.execute(
                        insert(EventMessage).values(
                            id=_uuid(), event_type="probe", source_agent="probe", payload={}, created_at=now
                        )
                    )
                finally:
                    await trans.rollback()
        except Exception:
            return False
        return True

    async def _isolate(self, rows: list[ExecutionRow], events: list[dict[str, Any]]) -> None:
        """Write one row per transaction; drop (and log) the rows refused while the database answers."""
        for row in rows:
            try:
                async with self.db.engine.begin() as conn:
                    await self._upsert(conn, [row])
            except Exception as exc:
                if not await self._database_answers():
                    raise  # an outage after all: everything stays pending (rewriting is idempotent)
                log.error("dropping execution %s#%s the database refuses: %s", row.job_id, row.attempt, exc)
        for event in events:
            try:
                async with self.db.engine.begin() as conn:
                    await insert_events(conn, [event])
            except Exception as exc:
                if not await self._database_answers():
                    raise
                log.error("dropping event %s the database refuses: %s", event["id"], exc)


async def settle(
    inflight: set[asyncio.Task[int]], total: int, error: BaseException | None, *, all_: bool = False
) -> tuple[int, BaseException | None]:
    """Wait for one (or ``all_``) of the writes in flight; add up what they handled, keep the first error."""
    if not inflight:
        return total, error
    done, _ = await asyncio.wait(
        inflight, return_when=asyncio.ALL_COMPLETED if all_ else asyncio.FIRST_COMPLETED
    )
    for task in done:
        inflight.discard(task)
        if task.cancelled():
            error = error or asyncio.CancelledError()
        elif task.exception() is not None:
            error = error or task.exception()
        else:
            total += task.result()
    return total, error


_running = [0, 0]  # Recorders running in this process; objects frozen by others when the first started
_threshold: list[tuple[int, ...]] = []  # the collector's thresholds before the first Recorder started

YOUNG = 50_000
"""Allocations of containers between two young collections while a Recorder runs (Python's default: 700)."""


def freeze_gc() -> None:
    """While a Recorder runs, the objects alive when the first one started (modules, classes, settings: the
    process' long-lived objects; garbage is collected first) are left out of the collector's full passes:
    the Recorder's allocations (a reply's lists, rows in flight) trigger one every few thousand rows, and
    each walked them all (a quarter of its CPU). And the young generation is collected every
    :data:`YOUNG` allocations instead of every 700: a read's reply (two lists per entry, thousands of
    entries) lives until its batch is merged, so each young collection walked it and moved it to an older
    generation to be walked again (~10% of the Recorder's CPU); now most replies are freed before a
    collection sees them. The last Recorder to stop gives both back (:func:`unfreeze_gc`), so what became
    garbage meanwhile is collected."""
    _running[0] += 1
    if _running[0] == 1:
        _running[1] = gc.get_freeze_count()
        gc.collect()
        gc.freeze()
        _threshold[:] = [gc.get_threshold()]
        young, *older = _threshold[0]
        gc.set_threshold(max(young, YOUNG), *older)


def unfreeze_gc() -> None:
    """One Recorder stopped (see :func:`freeze_gc`). The last one unfreezes and restores the thresholds;
    if the process had frozen objects of its own before (``gc.freeze`` at start-up, a forking server),
    what is alive is frozen again after a collection."""
    _running[0] -= 1
    if _running[0] == 0:
        if _threshold:
            gc.set_threshold(*_threshold.pop())
        gc.unfreeze()
        if _running[1]:
            gc.collect()
            gc.freeze()
