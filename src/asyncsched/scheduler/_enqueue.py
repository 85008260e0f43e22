"""The one seam between scheduler and queue: a run of a task becomes a job (``sched-<task>-<tick s>``)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._protocols import RunQueue
from ..store.models import ScheduledTask

__all__ = ["Firing", "enqueue_run", "job_id_for"]


@dataclass(frozen=True)
class Firing:
    """One run the scheduler handed to the queue."""

    task_id: str
    task_name: str
    agent_name: str
    tick: datetime
    job_id: str


def job_id_for(task_id: str, tick: datetime) -> str:
    """The job id of one tick of one task: the same on every replica, so the queue dedupes it."""
    return f"sched-{task_id}-{int(tick.timestamp())}"


def _retry(options: dict[str, Any]) -> Any:
    if not options.get("retry"):
        return None
    spec = options["retry"]
    if spec.get("interval", 0) or set(spec) - {"max", "interval"}:  # fixed waits, or backoff / on
        from ..queue import Retry  # type: ignore[import-not-found,unused-ignore]

        return Retry.from_dict(spec)
    return spec["max"]


async def enqueue_run(
    queue: RunQueue, task: ScheduledTask, job_id: str, tick: datetime | None, *, after: str | None = None
) -> str:
    """Enqueue one run of ``task`` as ``job_id`` (unique: a retried enqueue of a tick is a no-op);
    ``after``: a held run (``overlap: queue``) waits, deferred, until that job ended (finished or not)."""
    options = task.options or {}
    jitter = float(options.get("jitter") or 0) if after is None else 0.0
    limit = options.get("limit") or {}  # flow limit (docs/flow-control.md)
    waits: dict[str, Any] = {}
    if after is not None:
        waits = {"depends_on": after, "allow_dependency_failures": True}
    result: str = await queue.enqueue(
        task.function,
        rate_limit=limit.get("rate"),
        max_concurrency=limit.get("max_concurrency"),
        concurrency_key=limit.get("concurrency_key"),
        function_path=task.function,
        job_id=job_id,
        unique=True,
        agent_name=task.agent_name,
        task_name=task.name,
        scheduled_task_id=task.id,
        args=tuple(task.args or ()),
        kwargs=dict(task.kwargs or {}),
        queue=task.queue,
        timeout=options.get("timeout"),
        retry=_retry(options),
        delay=random.uniform(0, jitter) if jitter and tick is not None else None,
        description=f"{task.agent_name}/{task.name}" + (f" @ {tick.isoformat()}" if tick else " (run now)"),
        **waits,
    )
    return result
