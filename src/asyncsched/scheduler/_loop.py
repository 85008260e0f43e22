"""The firing loop of :class:`TaskScheduler`: pass after pass of due ticks, asleep in between until the next
tick or a change notice (never busy-polling), with the change feed and the batched run-time flush to SQL
running beside it under supervisors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import Table, bindparam, or_, update

from .._redis.cluster import pubsub_of
from .._supervise import Supervised
from ..store.models import ScheduledTask
from ._base import FLUSH_INTERVAL, LEASE, MAX_IDLE, PASS_SPACING
from ._dispatch import DUE_BATCH
from ._index import to_ms
from ._recovery import Recovery

__all__ = ["Loop"]

log = logging.getLogger("asyncsched.scheduler")

_NEVER = 2**62
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
_TABLE = cast(Table, ScheduledTask.__table__)
_SET_TIMES = {"next_run_at": bindparam("b_next"), "updated_at": _TABLE.c.updated_at}
_WITH_LAST = (
    update(_TABLE)
    .where(
        _TABLE.c.id == bindparam("b_id"),
        # replicas flush out of order: never move last_run_at backwards
        or_(_TABLE.c.last_run_at.is_(None), _TABLE.c.last_run_at <= bindparam("b_last")),
    )
    .values(last_run_at=bindparam("b_last"), **_SET_TIMES)
)
# no run to record: only the next run time (a replica's stale copy must never erase a recorded run)
_NO_LAST = update(_TABLE).where(_TABLE.c.id == bindparam("b_id")).values(**_SET_TIMES)


class Loop(Recovery):
    """:meth:`run` and its helpers, on top of dispatch and recovery."""

    async def _flush(self) -> None:
        """Write batched last_run_at / next_run_at to SQL (never bumps ``updated_at``), two ``executemany``
        UPDATEs per flush whatever the number of tasks."""
        updates, self._sql_updates = self._sql_updates, {}
        if not updates:
            return
        with_last: list[dict[str, Any]] = []
        no_last: list[dict[str, Any]] = []
        for task_id, (last, nxt) in updates.items():
            params = {"b_id": task_id, "b_next": nxt}
            if last is None:
                no_last.append(params)
            else:
                with_last.append({**params, "b_last": last})
        try:
            async with self._session() as session, session.begin():
                for statement, params_list in ((_WITH_LAST, with_last), (_NO_LAST, no_last)):
                    if params_list:
                        await session.execute(statement, params_list)
        except BaseException:  # failed, or cancelled by a stop mid-write: the final flush writes them
            for task_id, value in updates.items():  # keep them for the next flush
                self._sql_updates.setdefault(task_id, value)
            raise
        for task_id, (_last, nxt) in updates.items():  # SQL holds them now (or a later run's)
            if task_id in self._planned and self._planned[task_id][1] == nxt:
                del self._planned[task_id]

    async def _listen(self) -> None:
        """Set ``_changed`` on every change notice (pub/sub); resubscribe after a lost connection."""
        assert self._redis is not None
        while True:
            pubsub = await pubsub_of(self._redis)
            try:
                await pubsub.subscribe(self.index.channel)
                self._listener_ready.set()
                self._notices.append("*")  # anything may have changed while we were not listening
                self._changed.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=MAX_IDLE)
                    if message is not None:
                        data = message["data"]
                        text = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
                        self._notices.append(text)  # (garbage, invalid UTF-8 included, only wakes it)
                        self._changed.set()
            except Exception as exc:  # connection lost: the version counter covers the gap
                _raise_if_cancelling()
                if self._listener_ready.is_set():
                    log.warning("change feed interrupted (%s); resubscribing", exc)
                else:
                    log.debug("change feed still unavailable (%s)", exc)
                self._listener_ready.clear()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self._flush()
            except Exception as exc:
                _raise_if_cancelling()
                if not self._sql_down:  # one line per outage; the run times stay in memory meanwhile
                    log.warning(
                        "writing run times to SQL failed (%s: %s); firing goes on, retrying every %g s",
                        type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "",
                        FLUSH_INTERVAL,
                    )
                self._sql_down = True
            else:
                if self._sql_down:
                    self._sql_down = False
                    log.info("run times written to SQL again")

    async def run(self) -> None:
        """Fire due ticks until cancelled. Sleeps until the next tick or a change notice; never busy-polls."""
        await self._open()
        # Each helper runs under a supervisor: one that crashes is logged and restarted with backoff, while
        # the firing loop goes on (it used to take the whole loop down with it).
        helpers = [
            Supervised("asyncsched-scheduler-listen", self._listen).start(),
            Supervised("asyncsched-scheduler-flush", self._flusher).start(),
        ]
        if self.settings.rq_scheduler:  # rq-scheduler's jobs too (docs/scheduler.md, "rq-scheduler's jobs")
            from ._rqscheduler import RQSchedulerBridge

            bridge = RQSchedulerBridge(self._redis, self.settings, clock=self.clock)  # type: ignore[arg-type]
            helpers.append(Supervised("asyncsched-scheduler-rq-scheduler", bridge.run).start())
        try:
            async with asyncio.timeout(30):
                await self._listener_ready.wait()
            self._changed.clear()
            self._notices.clear()
            await self.rebuild_index()
            self._version = await self.index.version()
            log.info("scheduler running: %d task(s)", len(self._cache))
            while True:
                _raise_if_cancelling()  # a cancel swallowed by a library below us still stops the loop
                try:
                    if await self._index_lost():
                        log.warning(
                            "schedule index missing from Redis (restarted or flushed); rebuilt from SQL"
                        )
                        await self.rebuild_index()
                    if self._release_later is None:  # this pass's leases: released by the read after it
                        self._release_later = []
                    await self.run_pending()
                    if self._redis_down:
                        self._redis_down = False
                        log.info("Redis answers again; firing resumed")
                    await self._wait()
                except Exception as exc:  # Redis or SQL unavailable: nothing is lost, the index waits for us
                    _raise_if_cancelling()
                    if isinstance(exc, _REDIS_DOWN):
                        if not self._redis_down:  # one line per outage, not a traceback a second
                            log.warning("Redis unavailable (%s); firing paused, retrying every 1 s", exc)
                        self._redis_down = True
                    else:
                        log.exception("firing pass failed; retrying in 1 s")
                        if "WRONGTYPE" in str(exc):  # a foreign write over an index key: repaired
                            with contextlib.suppress(Exception):
                                await self.rebuild_index()
                    await asyncio.sleep(1.0)
        finally:
            await asyncio.gather(*(helper.stop() for helper in helpers))
            released, self._release_later = self._release_later, None
            if released:  # (else their leases expire and another replica enqueues them again: a no-op)
                with contextlib.suppress(Exception):
                    await self.index.done_many(released)

    async def _index_lost(self) -> bool:
        """Whether Redis lost the index (restart without persistence, FLUSHALL) while SQL has live tasks
        (read with the wake state of the previous pass, when there was one)."""
        indexed, self._indexed = self._indexed, None
        if not self._cache.fireable:
            return False
        if indexed is None:
            assert self._redis is not None
            indexed = bool(await self._redis.exists(self.index.sig_key))
        return not indexed

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        rest = self._pass_at + PASS_SPACING - loop.time()
        if rest > 0:  # a busy replica claims what fell due meanwhile in one pass, not one pass per tick
            await asyncio.sleep(rest)
        # one round trip for everything between two passes: the last pass's leases released, the earliest
        # next tick and lease, the change counter, the index's existence, and what is due already
        now_ms = math.floor(self.clock().timestamp() * 1000)  # never a tick the pass's clock finds ahead
        # (a pass run from outside the loop meanwhile releases its own leases at once)
        released, self._release_later = self._release_later or [], None
        try:
            state = await self.index.wake_state(now_ms, DUE_BATCH, released)
        except BaseException:
            self._release_later = released  # released with a later read (or their leases expire)
            raise
        earliest = state.earliest
        timeout = MAX_IDLE
        if earliest is not None:
            timeout = min(MAX_IDLE, max(0.0, (earliest - to_ms(self.clock())) / 1000))
        if not state.indexed and self._cache.fireable:
            timeout = 0.0  # the index is gone (Redis restarted, flushed): the next iteration rebuilds it
        if timeout == 0 and state.due:
            self._due_read = state.due  # the next pass claims these without reading them again
        # no lease expires before the earliest one read, nor before a lease taken from now on would
        lease_ms = _NEVER if state.lease_ms is None else state.lease_ms
        self._leases_due_ms = min(lease_ms, to_ms(self.clock() + LEASE))
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # unlike 3.11's wait_for, never swallows a cancel
                    await self._changed.wait()
            if self._changed.is_set():  # the counter as of the notices (else the next pass reads it)
                state = await self.index.wake_state()
        self._pass_at = loop.time()
        self._indexed = state.indexed
        version = state.version
        if self._changed.is_set() or version != self._version:
            self._changed.clear()
            notices, self._notices = self._notices, []
            changes, self._version = version - self._version, version
            if notices and "*" not in notices and changes == len(notices):
                await self._cache.reload_ids(self._session, set(notices))  # each change was announced
            else:  # a notice was missed (the counter moved more), or everything may have changed
                await self._reload()


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that something below us turned into another exception or swallowed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
