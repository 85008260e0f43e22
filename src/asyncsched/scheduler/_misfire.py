"""Misfire handling: which ticks of a due index entry run, and which tick is indexed next."""

from __future__ import annotations

import enum
from collections import deque
from datetime import datetime, timedelta

from ..store.models import ScheduledTask
from ._triggers import Trigger

__all__ = [
    "DEFAULT_GRACE",
    "MISFIRE_ALL_LIMIT",
    "MisfirePolicy",
    "grace_of",
    "latest_at_or_before",
    "plan",
    "policy_of",
]


class MisfirePolicy(enum.StrEnum):
    """What to do with ticks missed while every scheduler was down (or late beyond the grace time)."""

    COALESCE = "coalesce"
    """One run for all the missed ticks (the default)."""
    SKIP = "skip"
    """No run for missed ticks; resume at the next tick."""
    ALL = "all"
    """One run per missed tick, at most :data:`MISFIRE_ALL_LIMIT` (the latest ones)."""


MISFIRE_ALL_LIMIT = 100
DEFAULT_GRACE = 60.0
"""Seconds a tick may be late and still count as on time (relevant to ``skip``)."""


def grace_of(task: ScheduledTask) -> timedelta:
    """How late a tick may be and still count as on time."""
    return timedelta(seconds=float((task.options or {}).get("misfire_grace", DEFAULT_GRACE)))


def policy_of(task: ScheduledTask) -> MisfirePolicy:
    return MisfirePolicy((task.options or {}).get("misfire", MisfirePolicy.COALESCE.value))


_MAX_CATCH_UP = 10_000


def plan(
    task: ScheduledTask, trigger: Trigger, tick: datetime, now: datetime
) -> tuple[list[datetime], datetime | None]:
    """The ticks to run for an index entry due at ``tick`` (seen at ``now``) and the next tick to index.

    If ``tick`` is at most ``misfire_grace`` late, the schedulers were merely slow: every due tick runs, none
    is merged. Otherwise ticks were missed (every scheduler down) and the task's policy decides:
    ``coalesce`` one run (for the latest due tick), ``skip`` none (but the latest tick if it is within the
    grace time), ``all`` each (the latest :data:`MISFIRE_ALL_LIMIT`). The next tick indexed is the first
    one after ``now``.
    """
    grace = grace_of(task)
    cutoff = now - grace
    nxt = trigger.next_after(now)
    if tick >= cutoff:
        due: list[datetime] = []
        cursor: datetime | None = tick
        while cursor is not None and cursor <= now and len(due) < _MAX_CATCH_UP:
            due.append(cursor)
            cursor = trigger.next_after(cursor)
        return due, nxt
    policy = policy_of(task)
    if policy is MisfirePolicy.ALL:
        ticks: deque[datetime] = deque(maxlen=MISFIRE_ALL_LIMIT)
        cursor = tick
        steps = 0
        while cursor is not None and cursor <= now and steps < 1_000_000:
            ticks.append(cursor)
            cursor = trigger.next_after(cursor)
            steps += 1
        return list(ticks), nxt
    latest = latest_at_or_before(trigger, tick, now)
    if policy is MisfirePolicy.SKIP:
        return ([latest] if latest >= cutoff else []), nxt
    return [latest], nxt


def latest_at_or_before(trigger: Trigger, first: datetime, now: datetime) -> datetime:
    """The last tick in ``[first, now]`` (``first`` is one), found without walking years of ticks."""
    for window in (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=367), None):
        start = first if window is None or now - window <= first else now - window
        latest: datetime | None = first if start == first else None
        cursor = trigger.next_after(start if start != first else first)
        steps = 0
        while cursor is not None and cursor <= now and steps < 200_000:
            latest = cursor
            cursor = trigger.next_after(cursor)
            steps += 1
        if latest is not None:
            return latest
    return first
