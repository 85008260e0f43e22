"""The Recorder: job lifecycle records and published events, written to SQL in batches, off the hot path.

It reads two Redis streams with the consumer group ``recorder``:

* :func:`asyncsched._keys.lifecycle_stream` — :class:`~asyncsched._lifecycle.LifecycleRecord` entries,
  merged into one :class:`~asyncsched.store.models.TaskExecution` row per ``(job_id, attempt)``;
* :func:`asyncsched._keys.event_log_stream` — event envelopes, inserted as
  :class:`~asyncsched.store.models.EventMessage` rows (an id already stored is ignored).

**Throughput.** A batch (up to ``batch_size`` entries) is merged in Python into one row per execution
(a job's queued, started and finished records in one batch are one row write) and written with ONE bulk
statement per table (:mod:`~asyncsched.store._history_sql`). Up to ``in_flight`` batches are written
concurrently while the next ones are read and merged (the next read is sent before a batch is written);
each is acknowledged (XACK) only after its commit. Rows without an outcome are held back so that a job
takes one write (:mod:`._recorder_hold`), longer while the reader is behind: a catch-up merges each job's
records across its reads.

**Failures.** If the database fails, nothing is acknowledged: the entries stay pending in Redis and are
retried with back-off (capped at ``max_backoff``); merges are idempotent, so nothing is duplicated. A row
the database refuses is dropped alone (:mod:`~asyncsched.store._recorder_write`). The outage is logged
once, and its end once, after a real commit.

**Loss.** The stream is trimmed only below what every consumer group acknowledged (``trim_interval``).
The producers' hard bound ``ASYNCSCHED_LIFECYCLE_MAXLEN`` may still drop records during a long outage:
those are counted exactly (:mod:`~asyncsched.store._history_loss`), logged once per
``loss_log_interval``, and their executions marked ``unknown`` (:mod:`~asyncsched.store._reconcile`).

The merge rule (Python inside a batch, SQL against the stored row) is in :mod:`._history_rows`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from datetime import timedelta
from types import TracebackType

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .. import _keys
from .._redis import create_redis, is_client, is_cluster
from .._streams import StreamGroup, is_nogroup, wait_for_any
from .._supervise import Supervised
from ..config import Settings, get_settings
from ._database import Database
from ._history_loss import LossLog, StreamAccount
from ._history_rows import STATUS_OF, Batch, decode_event, micros, stream_items, text
from ._reconcile import Reconciler
from ._recorder_hold import QueuedHold
from ._recorder_watch import Watch
from ._recorder_write import BatchWriter, freeze_gc, settle, unfreeze_gc

__all__ = ["GROUP", "STATUS_OF", "Recorder", "decode_event"]

log = logging.getLogger("asyncsched.store.recorder")

GROUP = "recorder"
"""Consumer group of the Recorder on both streams."""


def _retention(settings: Settings, retention: timedelta | bool | None) -> timedelta | None:
    if retention is True:
        days = settings.retention_days
        return timedelta(days=days) if days > 0 else None
    return retention or None


_ROUND = 64  # batches per round of the background loop (flush() may run between rounds)


class Recorder(BatchWriter):
    """Writes execution history and the event log to SQL from Redis streams, in batches (async CM).

    ``async with Recorder(redis, db=db):`` runs the loop in a task until the block exits; leaving it
    writes what is already in the streams (one last drain, if the database answers) and stops.
    ``await recorder.flush()`` writes everything readable now and returns how many entries it handled.

    ``flush_interval`` bounds how long the loop waits on an empty stream before it looks again;
    entries are written as soon as they are read, up to ``batch_size`` at a time and ``in_flight``
    batches at once. ``retention`` (``True``: ``settings.retention_days``, where 0 keeps everything; a
    ``timedelta``; ``False``/``None``: keep everything) is applied on start and every
    ``prune_interval`` seconds. ``consumer`` (default: host name and process id) names this reader in the
    group: any number of Recorders share the group, each entry read by one; what a reader that died had
    read is claimed by another after ``claim_idle`` (at once by a restart under the same name).
    ``reconcile_interval`` and
    ``reconcile_age``: how often open executions older than that are checked against Redis.
    ``hold_queued``: seconds an execution seen without an outcome (queued, running) is held back by the
    loop, so that its later records merge into it and it takes one write (:mod:`._recorder_hold`; 0: none);
    ``hold_behind``: how long while the reader is behind the stream (a catch-up reads ahead: its jobs'
    outcomes are further down; at most ``claim_idle / 2``, so no reader claims what is held);
    ``hold_rows``: at most that many rows held (about 0.5 KB each), past that they are written at once.
    """

    _ahead: asyncio.Task[Batch | None] | None  # the read sent ahead (_read)
    _behind: bool  # the last read of new entries was full: more are waiting

    def __init__(
        self,
        redis: str | aioredis.Redis | None = None,
        *,
        db: Database,
        settings: Settings | None = None,
        batch_size: int = 2000,
        flush_interval: float = 0.2,
        consumer: str | None = None,
        events: bool = True,
        retention: timedelta | bool | None = True,
        prune_interval: float = 3600.0,
        claim_idle: float = 60.0,
        max_backoff: float = 5.0,
        in_flight: int = 3,
        trim_interval: float = 1.0,
        reconcile_interval: float = 10.0,
        reconcile_age: float = 10.0,
        loss_log_interval: float = 10.0,
        hold_queued: float = 1.0,
        hold_behind: float = 30.0,
        hold_rows: int = 250_000,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("in_flight", in_flight), ("hold_rows", hold_rows)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.settings = settings or get_settings()
        self.db = db
        self._owns_redis = not is_client(redis)
        self.redis = redis if is_client(redis) else create_redis(redis or self.settings.redis_url)
        self.batch_size, self.flush_interval, self.in_flight = batch_size, flush_interval, in_flight
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        prefix = self.settings.key_prefix
        self._cluster = cluster = is_cluster(self.redis)  # the lifecycle stream and the event log: 2 slots
        self.lifecycle_stream = _keys.lifecycle_stream(prefix, cluster=cluster)
        self.event_stream = _keys.event_log_stream(prefix, cluster=cluster)
        self.streams = [self.lifecycle_stream] + ([self.event_stream] if events else [])
        self.retention = _retention(self.settings, retention)
        self.claim_idle, self.max_backoff = claim_idle, max_backoff
        self.group = StreamGroup(self.redis, self.streams, GROUP, self.consumer, start="0", prefix=prefix)
        self.account = StreamAccount(self.redis, prefix, GROUP, self.consumer)
        self.losses = LossLog(loss_log_interval)
        self.reconciler = Reconciler(
            self.redis, db, prefix, self.account.acked_through, min_age=reconcile_age, group=GROUP
        )
        self.hold = QueuedHold(
            hold_queued, self.lifecycle_stream, behind=min(hold_behind, claim_idle / 2), max_rows=hold_rows
        )
        intervals = {"trim_interval": trim_interval, "prune_interval": prune_interval}
        self.watch = Watch(self, reconcile_interval=reconcile_interval, **intervals)
        self.recorded = 0
        """Entries written (and acknowledged) since this Recorder was created."""
        self.failures = 0
        """Failed write attempts (each is retried)."""
        self.last_error: BaseException | None = None
        self._lock, self._stopping = asyncio.Lock(), asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_claim, self._failing, self._batch_failures = 0.0, False, 0
        self._pending: dict[str, str] | None = dict.fromkeys(self.streams, "0")  # own pending first
        self._last_id, self._behind, self._ahead = "$", False, None

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> Recorder:
        self._stopping.clear()
        with contextlib.suppress(Exception):  # Redis may be down: the loop keeps trying
            await self.group.ensure()
        # Supervised: should the loop ever end unasked (it catches every Exception itself), it is restarted
        # with backoff and logged instead of leaving history unrecorded.
        name = f"asyncsched-recorder-{self.consumer}"
        self._task = Supervised(name, self._run, done=self._stopping.is_set).start().task
        await self.watch.start()
        freeze_gc()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        try:
            await self.watch.stop()
            task, self._task = self._task, None
            if task is not None:
                try:
                    await asyncio.wait_for(task, timeout=self.flush_interval + 30.0)
                except TimeoutError:
                    log.warning(
                        "recorder did not finish its last drain in time; entries stay pending in Redis"
                    )
        finally:
            unfreeze_gc()
        self.losses.flush(force=True)
        if self._owns_redis:
            await self.redis.aclose()

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                async with self._lock:
                    handled = await self._pump(limit=_ROUND)
                if not handled:
                    await self._wait_for_entries()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                backoff = min(self.max_backoff, backoff * 2 if backoff else 0.05)
                self._failed(exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                continue
            backoff = 0.0
        with contextlib.suppress(Exception):  # last drain; on failure entries stay pending, not lost
            await self.flush()

    def _failed(self, exc: BaseException, backoff: float) -> None:
        self.last_error = exc
        if not self._failing:
            log.warning(
                "recorder cannot record history (%s: %s); entries stay in Redis, retrying",
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            self._failing = True
        else:
            log.debug("recorder retry failed (%s); next try in %.2fs", exc, backoff)

    async def flush(self) -> int:
        """Write everything readable now (pending and new entries, no waiting); return how many entries."""
        async with self._lock:
            return await self._pump(limit=None)

    # ------------------------------------------------------------------ reading

    async def _wait_for_entries(self) -> None:
        """Block until an entry is added to a stream (or ``flush_interval`` passes); reads nothing."""
        ids = {self.lifecycle_stream: self._last_id}
        if len(self.streams) > 1:
            ids[self.event_stream] = "$"
        block = max(1, int(self.flush_interval * 1000))
        await wait_for_any(self.redis, ids, block)

    async def _read_pending(self) -> Batch | None:
        """This consumer's pending entries (a failed batch, a restart, claimed ones), from a cursor."""
        assert self._pending is not None
        reply = await self.group.read_pending(self._pending, self.batch_size)
        batch = Batch(held=self.hold.rows)
        for stream, entries in stream_items(reply):
            if entries:
                self._pending[stream] = text(entries[-1][0])
                add = batch.add_lifecycle if stream == self.lifecycle_stream else batch.add_events
                add(stream, entries)
        if not batch.size:
            self._pending = None
            return None
        return batch

    async def _read_new(self) -> Batch | None:
        batch = Batch(held=self.hold.rows)
        lost, span, entries = await self.account.read(self.batch_size)
        self._behind = len(entries) >= self.batch_size
        if lost:
            self.losses.add(lost, span)
        if entries:
            last = batch.add_entries(self.lifecycle_stream, entries)
            if last is not None:
                self._last_id = text(last)
        if len(self.streams) > 1:
            reply = await self.group.read_new(self.batch_size, streams=[self.event_stream])
            for stream, events in stream_items(reply):
                batch.add_events(stream, events)
        return batch if batch.size else None

    async def _next_batch(self) -> Batch | None:
        if not self.group.ready:
            await self.group.ensure()
        try:
            if self._pending is not None:
                batch = await self._read_pending()
                if batch is not None:
                    return batch
            return await self._read_new()
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            # the stream or group was deleted (Redis restarted empty, FLUSHALL): read what is there now
            await self.group.ensure(lost=True)
            self._pending = self.group.cursors()
            self._last_id = "0"
            return None

    async def _claim(self) -> None:
        """Take over entries another consumer read but never acknowledged (it died) after ``claim_idle``."""
        for stream in self.streams:
            with contextlib.suppress(ResponseError):
                await self.group.autoclaim(stream, self.claim_idle, self.batch_size, justid=True)
                await self.group.forget_idle(stream, self.claim_idle)
        self._pending = self.group.cursors()

    # ------------------------------------------------------------------ the pipeline

    async def _pump(self, limit: int | None) -> int:
        """Read and write batches (``in_flight`` at once) until nothing is readable or ``limit`` batches;
        returns the entries handled. A failed write stops the reading, lets the other writes finish and
        raises: the failed entries stay pending and are read again first."""
        inflight: set[asyncio.Task[int]] = set()
        total, batches, error = 0, 0, None
        try:
            while error is None and (limit is None or batches < limit):
                if self._stopping.is_set() and limit is not None:
                    break
                claim = time.monotonic() >= self._next_claim
                if claim and self._ahead is None:
                    if inflight:  # claiming re-reads our pending entries: none may be in flight
                        total, error = await settle(inflight, total, error, all_=True)
                        continue
                    await self._claim()
                    self._next_claim = time.monotonic() + max(1.0, self.claim_idle / 2)
                if len(inflight) >= self.in_flight or (inflight and self._pending is not None):
                    total, error = await settle(inflight, total, error)
                    continue
                batch = self.hold.due(behind=self._behind, everything=limit is None, limit=self.batch_size)
                if batch is None:
                    batch = await self._read(ahead=not claim)
                    if batch is None:
                        if self._pending is not None:
                            continue  # the groups were recreated
                        break
                    self.hold.take(batch, holding=limit is not None)
                batches += 1
                inflight.add(asyncio.create_task(self._commit(batch)))
        except BaseException:
            self._drop_ahead()
            self._pending = self.group.cursors()  # a read failed: what it took is pending
            raise
        finally:
            total, error = await settle(inflight, total, error, all_=True)
        if error is not None:
            self._drop_ahead()
            self._pending = self.group.cursors()
            raise error
        return total

    async def _read(self, *, ahead: bool) -> Batch | None:
        """The next batch read; with ``ahead``, the read after it is sent at once (Redis serves it while
        this one is merged and written). A batch read ahead is taken by the next call, this ``_pump``'s or
        a later one's; dropped on a failure, its entries stay pending and are read again first."""
        task, self._ahead = self._ahead, None
        batch = await (task if task is not None else self._next_batch())
        if ahead and batch is not None and self._pending is None:
            self._ahead = asyncio.create_task(self._next_batch())
        return batch

    def _drop_ahead(self) -> None:
        task, self._ahead = self._ahead, None
        if task is not None and not task.done():
            task.cancel()
        elif task is not None and not task.cancelled():
            task.exception()  # (retrieved: its entries are pending, read again first)

    async def _commit(self, batch: Batch) -> int:
        rows = batch.rows(micros(time.time()), self._cluster)
        events = list(batch.events.values())
        if rows or events:
            await self._write(rows, events)
        await self.group.ack(batch.ack, batch.poison)
        if batch.trimmed:
            await self.account.count_lost(batch.trimmed)
            self.losses.add(batch.trimmed, None)
        self.recorded += len(batch)
        if (rows or events) and self._failing:
            log.info("recorder writes again; the pending history is recorded")
            self._failing = False
        return len(batch)

    # ------------------------------------------------------------------ health

    async def backlog(self) -> dict[str, int]:
        """Entries not yet recorded, per stream: read but unacknowledged plus never read. Exact: records
        dropped unread are counted as lost (``asyncsched_history_lost_total``), not as backlog."""
        out = {self.lifecycle_stream: await self.account.backlog()}
        if len(self.streams) > 1:
            total = 0
            with contextlib.suppress(ResponseError):
                for group in await self.redis.xinfo_groups(self.event_stream):
                    if text(group.get("name", b"")) == GROUP:
                        total = int(group.get("pending") or 0) + int(group.get("lag") or 0)
            out[self.event_stream] = total
        return out
