"""The ``overlap`` check of a claim on a Redis Cluster.

The claim script judges ``overlap`` by the status of the task's previous run, read from that run's job hash.
On a single Redis it reads the hash itself; on a cluster the hash is in its queue's slot and the script runs
in the scheduler's, where it cannot read it. So before a pass's claims, the statuses of the previous runs
are copied (one pipelined round trip to read the ``last run`` entries, one to read the job hashes, one to
write the copies) to ``{<ns>:sched}:status:<job id>`` (kept a minute), and the script reads the copy
instead (:meth:`ScheduleIndex.claim_many` points its job-key prefix there).

The claim itself stays one atomic compare-and-advance of the index (each tick is still claimed once across
replicas); only the status it judges overlap by may be a round trip old. A run that ends in between still
counts as running (that tick is skipped or held, as if it came a moment earlier); a run cannot start in
between without having been ``queued`` already, which counts as running too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

__all__ = ["COPY_TTL_MS", "copy_statuses"]

COPY_TTL_MS = 60_000
"""How long a copied status is kept (a pass's claims use it within milliseconds)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def copy_statuses(
    redis: aioredis.Redis, last_key: str, job_prefix: str, copy_prefix: str, task_ids: Sequence[str]
) -> None:
    """Copy the status of each task's previous run (``last_key``: task -> ``<tick> <job id>``) from
    ``<job_prefix><id>`` to ``<copy_prefix><id>`` (removed when the job has none)."""
    if not task_ids:
        return
    pipe: Any = redis.pipeline(transaction=False)
    async with pipe:
        for task_id in task_ids:
            pipe.hget(last_key, task_id)
        lasts = await pipe.execute()
    ids = [_text(last).partition(" ")[2] for last in lasts if last]
    ids = [i for i in ids if i]
    if not ids:
        return
    async with pipe:
        for job_id in ids:
            pipe.hget(job_prefix + job_id, "status")
        statuses = await pipe.execute()
    async with pipe:
        for job_id, status in zip(ids, statuses, strict=True):
            if status is None:
                pipe.delete(copy_prefix + job_id)
            else:
                pipe.hset(copy_prefix + job_id, "status", status)
                pipe.pexpire(copy_prefix + job_id, COPY_TTL_MS)
        await pipe.execute()
