"""What a firing replica keeps of every task: the fields firing needs, packed small (100,000 tasks in MBs).

The firing loop needs each task's schedule, function, arguments and options without asking SQL (it keeps
firing through a database outage), but not 100,000 ORM objects: each row is kept as one ``marshal``-ed
tuple (~0.4 KB with its key) and unpacked into a :class:`TaskView` when it falls due. A full reload
re-validates only the rows whose packed form changed; a change notice naming tasks reloads those rows
alone (:meth:`TaskCache.reload_ids`). Rows are read from SQL in keyset-ordered chunks of plain rows.
"""

from __future__ import annotations

import logging
import marshal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import select

from ..store.models import ScheduledTask
from ._definition import task_trigger
from ._rows import COLUMNS, UNAVAILABLE, Sessions, TaskKey, load_checked, row_problems
from ._triggers import Trigger

__all__ = ["CHUNK", "TaskCache", "TaskView", "trigger_of"]

log = logging.getLogger("asyncsched.scheduler")

CHUNK = 2000
"""Rows per SQL read of a reload."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIMES = ("last_run_at", "next_run_at", "anchor_at")
_FIELDS = ("id", "agent_name", "name", *(c for c in COLUMNS if c not in ("description", "source")), *_TIMES)
"""What firing reads of a row (the id first: the cache's key, left out of the packed form)."""
_COLUMNS = [getattr(ScheduledTask, name) for name in _FIELDS]


class TaskView:
    """A read-only task of the cache, with the attributes of :class:`ScheduledTask` that firing reads
    (times as aware UTC). Pass it where a ``ScheduledTask`` is read through :meth:`as_task`."""

    __slots__ = (*_FIELDS, "fireable")
    id: str
    agent_name: str
    name: str
    enabled: bool
    type: str
    schedule: str
    timezone: str
    function: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    options: dict[str, Any]
    last_run_at: datetime | None
    next_run_at: datetime | None
    anchor_at: datetime | None
    fireable: bool

    def as_task(self) -> ScheduledTask:
        return cast(ScheduledTask, self)


_UNJUDGED, _FIREABLE, _IDLE = b"?", b"1", b"0"
"""First byte of a packed row: not validated yet, enabled and valid, disabled or invalid."""


def _pack(row: Any) -> bytes:
    """One row as bytes: a flag byte, then the fields but the id (the cache's key) marshalled."""
    values = list(row)
    for i, name in enumerate(_FIELDS):
        if name in _TIMES and values[i] is not None:
            dt: datetime = values[i]
            dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
            values[i] = (dt - _EPOCH) // timedelta(microseconds=1)
    return _UNJUDGED + marshal.dumps(tuple(values[1:]))


def _unpack(task_id: str, blob: bytes) -> TaskView:
    view = TaskView()
    view.id = task_id
    for name, value in zip(_FIELDS[1:], marshal.loads(blob[1:]), strict=True):
        if name in _TIMES and value is not None:
            value = _EPOCH + timedelta(microseconds=value)
        setattr(view, name, value)
    view.fireable = blob[:1] == _FIREABLE
    return view


@lru_cache(maxsize=4096)
def _trigger(kind: str, schedule: str, timezone: str, start: Any, align: Any, anchor: Any) -> Trigger:
    options = {"start": start, "align": align}
    stub = TaskView()
    stub.type, stub.schedule, stub.timezone, stub.options, stub.anchor_at = (
        kind,
        schedule,
        timezone,
        options,
        None if anchor is None else _EPOCH + timedelta(microseconds=anchor),
    )
    return task_trigger(stub.as_task())


def trigger_of(task: ScheduledTask) -> Trigger:
    """``task_trigger(task)``, shared by every task with the same schedule (triggers hold no state)."""
    options = task.options or {}
    anchor = task.anchor_at
    anchor_us = None if anchor is None else (anchor.replace(tzinfo=anchor.tzinfo or UTC) - _EPOCH)
    return _trigger(
        task.type,
        task.schedule,
        task.timezone,
        options.get("start"),
        options.get("align"),
        None if anchor_us is None else anchor_us // timedelta(microseconds=1),
    )


def _problems(view: TaskView) -> list[str]:
    try:  # row_problems builds the trigger too: a schedule that no longer parses is one of them
        return [str(p) for p in row_problems(view.as_task())]
    except Exception as exc:
        return [str(exc)]


class TaskCache:
    """Task id -> packed task. :meth:`get` unpacks one; ``fireable`` counts enabled tasks that can fire."""

    def __init__(self) -> None:
        self._rows: dict[str, bytes] = {}
        self.fireable = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._rows

    def get(self, task_id: str) -> TaskView | None:
        blob = self._rows.get(task_id)
        return None if blob is None else _unpack(task_id, blob)

    def enabled(self, task_id: str) -> bool:
        """Whether ``task_id`` is cached and enabled (a fireable row is, without unpacking it)."""
        blob = self._rows.get(task_id)
        if blob is None:
            return False
        return blob[:1] == _FIREABLE or bool(_unpack(task_id, blob).enabled)

    def pop(self, task_id: str) -> None:
        blob = self._rows.pop(task_id, None)
        if blob is not None and blob[:1] == _FIREABLE:
            self.fireable -= 1

    def ids(self) -> set[str]:
        return set(self._rows)

    def views(self) -> Iterator[TaskView]:
        """Every task, unpacked one at a time (over a copy of the ids: the cache may change meanwhile)."""
        rows = self._rows
        for task_id in list(rows):
            blob = rows.get(task_id)
            if blob is not None:
                yield _unpack(task_id, blob)

    async def reload(self, sessions: Sessions) -> None:
        """Replace the cache with every task row of SQL (a row that cannot be read or fired is logged and
        kept out of firing: it never stops the others). Unchanged rows keep their verdict, unvalidated."""
        rows: dict[str, bytes] = {}
        last = ""
        while True:
            chunk = await _read_chunk(sessions, last)
            if not chunk:
                break
            last = chunk[-1][0]
            for task_id, blob in chunk:
                if blob is None:
                    continue
                old = self._rows.get(task_id)
                rows[task_id] = old if old is not None and old[1:] == blob[1:] else _judge(task_id, blob)
        self._rows = rows
        self.fireable = sum(1 for blob in rows.values() if blob[:1] == _FIREABLE)

    async def reload_ids(self, sessions: Sessions, ids: set[str]) -> None:
        """Reload only ``ids`` (the tasks named by change notices): one SQL read per ``CHUNK`` ids, so an
        edit costs each replica a row, not a reload of every task."""
        found: dict[str, bytes] = {}
        wanted = sorted(ids)
        for start in range(0, len(wanted), CHUNK):
            query = select(*_COLUMNS).where(ScheduledTask.id.in_(wanted[start : start + CHUNK]))
            try:
                async with sessions() as session:
                    found.update((row[0], _pack(row)) for row in await session.execute(query))
            except UNAVAILABLE:
                raise
            except Exception:  # an unreadable row: the full reload reads rows one by one and logs it
                await self.reload(sessions)
                return
        for task_id in wanted:
            self.pop(task_id)
            blob = found.get(task_id)
            if blob is not None:
                self._rows[task_id] = blob = _judge(task_id, blob)
                self.fireable += blob[:1] == _FIREABLE


def _judge(task_id: str, blob: bytes) -> bytes:
    view = _unpack(task_id, blob)
    reasons = _problems(view)
    if reasons:
        log.error("task %s/%s cannot be fired: %s", view.agent_name, view.name, "; ".join(reasons))
    return (_FIREABLE if view.enabled and not reasons else _IDLE) + blob[1:]


async def _read_chunk(sessions: Sessions, after: str) -> list[tuple[str, bytes | None]]:
    """The next ``CHUNK`` rows by id after ``after``, packed; an unreadable row comes back as ``None``
    (logged), found by reading the chunk's rows one by one."""
    query = select(*_COLUMNS).where(ScheduledTask.id > after).order_by(ScheduledTask.id).limit(CHUNK)
    try:
        async with sessions() as session:
            return [(row[0], _pack(row)) for row in (await session.execute(query))]
    except UNAVAILABLE:
        raise
    except Exception:
        pass
    keys_query = (
        select(ScheduledTask.id, ScheduledTask.agent_name, ScheduledTask.name, ScheduledTask.enabled)
        .where(ScheduledTask.id > after)
        .order_by(ScheduledTask.id)
        .limit(CHUNK)
    )
    async with sessions() as session:
        keys = [TaskKey(*r) for r in (await session.execute(keys_query)).all()]
    out: list[tuple[str, bytes | None]] = []
    for key in keys:
        try:
            task = await load_checked(sessions, key)
        except LookupError:  # deleted meanwhile (BrokenTask is not a LookupError)
            continue
        except Exception as exc:
            log.error("task %s/%s cannot be read and is not fired: %s", key.agent_name, key.name, exc)
            out.append((key.id, None))
            continue
        out.append((key.id, _pack([getattr(task, name) for name in _FIELDS])))
    return out
