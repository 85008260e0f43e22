"""Reconciling the history with Redis: executions whose outcome can never be recorded become ``unknown``.

An execution row stays ``scheduled``/``deferred``/``queued``/``running`` until a later lifecycle record
moves it. If that record was lost (dropped past the stream's hard bound, or Redis lost its data), or was
never written (an RQ worker ran the job), the row would stay so forever. The :class:`Reconciler` checks
such rows older than ``min_age``, a page at a time (one SQL query, one pipeline of ``HMGET`` on the job
hashes), and finds the ones whose job is gone from Redis, ended there, or moved to a later attempt.

It marks them only once the Recorder has acknowledged every lifecycle record written up to the moment the
job was seen in that state (the stream's last id read in the same pipeline): any record that could still
move the row has been written by then, so a marked row was really left behind. A row that is marked
anyway and then gets its record (a late outcome) is corrected by the Recorder's merge: outcomes rank above
``unknown``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from sqlalchemy import and_, or_, select

from .. import _keys
from .._redis.cluster import is_cluster
from ..rq.jobhash import JobField
from ..rq.keys import RQKeys
from ..rq.slots import id_tag
from ._database import Database
from ._history_loss import acked_through
from ._history_rows import text
from ._history_sql import mark_unknown
from .models import ExecutionStatus, TaskExecution, utcnow

__all__ = ["OPEN_STATUSES", "Reconciler"]

log = logging.getLogger("asyncsched.store.recorder")

OPEN_STATUSES = (
    ExecutionStatus.SCHEDULED.value,
    ExecutionStatus.DEFERRED.value,
    ExecutionStatus.QUEUED.value,
    ExecutionStatus.RUNNING.value,
)
_ENDED = {"finished": "finished", "failed": "failed", "stopped": "stopped", "canceled": "canceled"}

GONE = (
    "lost: the job no longer exists in Redis (Redis lost its data, or the job expired or was deleted) "
    "and its outcome was never recorded"
)


def _ended(status: str) -> str:
    return (
        f"lost: Redis says the job is {status}, but the history never received its outcome (the "
        "lifecycle records were dropped unread, or a worker that writes none ran it)"
    )


def _moved(attempt: int) -> str:
    return f"lost: the job moved on to attempt {attempt} and the outcome of this attempt was never recorded"


@dataclass
class _Suspects:
    seen_through: str  # the stream's last id when the jobs were seen
    keys: list[tuple[str, int, str]] = field(default_factory=list)
    stream: str | None = None  # on a Redis Cluster: the queue's lifecycle stream (None: the Recorder's own)


class Reconciler:
    """Marks open executions whose outcome was lost as ``unknown`` (see the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        db: Database,
        prefix: str,
        acked_through: Callable[[str], Awaitable[bool]],
        *,
        min_age: float = 10.0,
        page: int = 500,
        group: str | None = None,
    ) -> None:
        self.redis = redis
        self.db = db
        self.keys = RQKeys(prefix)
        self.prefix, self.cluster = prefix, is_cluster(redis)
        self.stream = _keys.lifecycle_stream(prefix, cluster=self.cluster)
        self.acked_through = acked_through
        self.group = group
        """The Recorder's consumer group: on a cluster, the reader of each queue's stream it checks."""
        self.min_age = min_age
        self.page = page
        self.marked = 0
        """Rows marked ``unknown`` so far."""
        self._cursor: tuple[datetime, str] | None = None
        self._suspects: list[_Suspects] = []

    def restart(self) -> None:
        """Check every open row again from the oldest (Redis lost its data)."""
        self._cursor = None

    async def run_once(self) -> int:
        """Mark what earlier passes found (once the Recorder caught up), then check the next page."""
        marked = await self._mark_confirmed()
        rows = await self._open_rows()
        if rows:
            await self._inspect(rows)
        return marked

    async def _open_rows(self) -> list[Any]:
        t = TaskExecution
        query = select(t.id, t.job_id, t.attempt, t.status, t.created_at).where(
            t.status.in_(OPEN_STATUSES), t.created_at < utcnow() - timedelta(seconds=self.min_age)
        )
        if self._cursor is not None:
            at, row_id = self._cursor
            query = query.where(or_(t.created_at > at, and_(t.created_at == at, t.id > row_id)))
        query = query.order_by(t.created_at, t.id).limit(self.page)
        async with self.db.engine.connect() as conn:
            rows = list((await conn.execute(query)).all())
        self._cursor = (rows[-1].created_at, rows[-1].id) if len(rows) == self.page else None
        return rows

    async def _inspect(self, rows: list[Any]) -> None:
        if not (self.cluster and self.group is not None):
            await self._inspect_on(rows, self.stream, None)
            return
        by_queue: dict[str, list[Any]] = {}
        for row in rows:  # a cluster job's records are in its queue's stream, named by its id's tag
            by_queue.setdefault(id_tag(row.job_id), []).append(row)
        for tag, queue_rows in by_queue.items():
            stream = _keys.lifecycle_stream(self.prefix, tag or None, cluster=True)
            await self._inspect_on(queue_rows, stream, stream if tag else None)

    async def _inspect_on(self, rows: list[Any], stream: str, lane: str | None) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            pipe.hmget(self.keys.job(row.job_id), [JobField.STATUS, JobField.ATTEMPT])  # type: ignore[unused-awaitable]
        pipe.xinfo_stream(stream)  # type: ignore[unused-awaitable]
        replies = await pipe.execute(raise_on_error=False)
        info = replies[-1]
        seen = "0-0" if isinstance(info, ResponseError) else text(info["last-generated-id"])
        suspects = _Suspects(seen, stream=lane)
        for row, reply in zip(rows, replies[:-1], strict=True):
            if isinstance(reply, Exception):
                continue
            status, attempt = (text(v) if v is not None else None for v in reply)
            if status is None:
                suspects.keys.append((row.job_id, row.attempt, GONE))
            elif status in _ENDED and (attempt is None or int(attempt) <= row.attempt):
                suspects.keys.append((row.job_id, row.attempt, _ended(status)))
            elif attempt is not None and attempt.isdigit() and int(attempt) > row.attempt:
                suspects.keys.append((row.job_id, row.attempt, _moved(int(attempt))))
        if suspects.keys:
            self._suspects.append(suspects)

    async def _mark_confirmed(self) -> int:
        ready: list[tuple[str, int, str]] = []
        waiting: list[_Suspects] = []
        for group in self._suspects:
            if group.stream is not None and self.group is not None:
                acked = await acked_through(self.redis, group.stream, self.group, group.seen_through)
            else:
                acked = await self.acked_through(group.seen_through)
            if acked:
                ready.extend(group.keys)
            else:
                waiting.append(group)
        self._suspects = waiting
        if not ready:
            return 0
        async with self.db.engine.begin() as conn:
            marked = await mark_unknown(conn, ready, utcnow(), OPEN_STATUSES)
        if marked:
            self.marked += marked
            gone = sum(1 for _, _, reason in ready if reason == GONE)
            log.warning(
                "history reconciled: %d executions marked 'unknown' (checked %d: %d gone from Redis, %d "
                "ended or retried there without a recorded outcome)",
                marked,
                len(ready),
                gone,
                len(ready) - gone,
            )
        return marked
