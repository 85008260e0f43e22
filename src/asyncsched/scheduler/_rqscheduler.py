"""Fire rq-scheduler's jobs from asyncsched's scheduler, once each, beside or instead of ``rqscheduler``.

Every :class:`~asyncsched.scheduler.TaskScheduler` that fires (``asyncsched scheduler``, ``asyncsched run``,
a worker's built-in scheduler) runs one :class:`RQSchedulerBridge` (``ASYNCSCHED_RQ_SCHEDULER=false`` turns
it off). It does what ``rqscheduler`` (rq-scheduler 0.14) does, with its own keys:

* **Only under rq-scheduler's own lock.** A pass starts by taking ``<p>:scheduler_lock`` exactly as
  ``Scheduler.acquire_lock`` does (``SET NX EX``) and ends by deleting it (only if it still holds our token).
  ``rqscheduler`` fires only while holding that same lock, so during a migration a live ``rqscheduler``
  and any number of asyncsched replicas take turns: each pass sees the schedule the previous one left.
  Its instance keys (``<p>:scheduler_instance:<name>``) are read, never written: a live one is logged.
* **One atomic step per job** (``lua/rqscheduler_fire.lua``): re-check the lock token and the job's score,
  status and meta; write the RQ job as ``Queue.enqueue_job`` does (status ``queued``, ``enqueued_at``,
  default ``timeout``, meta with ``repeat`` counted down), push it on its queue, reschedule it (interval:
  time of the run + interval; cron: next match) or drop it (one-shot, repeats used up), and append the
  ``queued`` lifecycle record, so the run is in the execution history as attempt N of the job id.
  A crash can never leave a job enqueued but not rescheduled, or the reverse.

Differences from ``rqscheduler``, each deliberate: a job whose previous run is still queued or started, or
was enqueued for the tick now due already (``rqscheduler`` stopped between its two writes), is rescheduled
without being enqueued again; jobs with ``depends_on``, without an origin, or whose meta is not
plain data (unless pickle is accepted) are left alone and reported (listing, log); ``at_front`` is not
honoured (rq-scheduler does not store it either, so ``rqscheduler`` cannot honour it from another process).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .. import _keys
from .._redis.scripts import ScriptRegistry, as_int
from ..config import Settings
from ..rq import codec
from ..rq._scripts import with_life
from ..rq.jobhash import JobField
from ..rq.keys import RQKeys
from ._rqscheduler_jobs import AGENT, FIRE, Plan, RQSchedulerJob, plan

__all__ = ["RQFiring", "RQSchedulerBridge", "list_rq_scheduler_jobs", "live_rqschedulers"]

log = logging.getLogger("asyncsched.scheduler.rq_scheduler")

LOCK_TTL = 15
"""Seconds the lock outlives a pass that died; every job fired renews it."""
POLL = 1.0
"""rq-scheduler's producers add jobs without notice: the set is looked at this often (rqscheduler: 60 s)."""
LOCK_RETRY = 0.25
"""Pause before trying again when someone else (rqscheduler, another replica) holds the lock."""
BATCH = 200
PASS_LIMIT = 10_000
"""Most jobs one pass fires before it lets go of the lock."""
DEFAULT_TIMEOUT = 180
"""``rq.Queue.DEFAULT_TIMEOUT``: what ``enqueue_job`` writes for a job created without a timeout."""
INSTANCE_CHECK = 60.0

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_FIRE_SOURCE = with_life(  # (it writes a lifecycle record: lib_life.lua)
    resources.files(__package__).joinpath("lua", "rqscheduler_fire.lua").read_text(encoding="utf-8")
)
_SOURCES = {"fire": _FIRE_SOURCE, "release": _RELEASE}


@dataclass(frozen=True)
class RQFiring:
    """What one pass did with one job: enqueued it (``enqueued``) or only rescheduled it."""

    job_id: str
    queue: str
    due_at: datetime
    next_run_at: datetime | None
    enqueued: bool


async def list_rq_scheduler_jobs(
    redis: aioredis.Redis, prefix: str = "rq", *, accept_pickle: bool = False, limit: int = 1000
) -> list[RQSchedulerJob]:
    """rq-scheduler's jobs, earliest first (at most ``limit``), read without running any pickle code."""
    keys = RQKeys(prefix)
    rows: list[Any] = await redis.zrange(keys.rq_scheduler_jobs, 0, limit - 1, withscores=True)
    async with redis.pipeline(transaction=False) as pipe:
        for member, _score in rows:
            pipe.hgetall(keys.job(member.decode()))  # type: ignore[unused-awaitable]
        hashes: list[Any] = await pipe.execute()
    return [
        RQSchedulerJob.from_hash(m.decode(), float(s), h, accept_pickle=accept_pickle)
        for (m, s), h in zip(rows, hashes, strict=True)
    ]


async def live_rqschedulers(redis: aioredis.Redis, prefix: str = "rq") -> list[str]:
    """Names of the ``rqscheduler`` processes registered and not dead (their keys expire when killed)."""
    keys = RQKeys(prefix)
    start = len(keys.rq_scheduler_instance(""))
    names = [
        key.decode()[start:]
        async for key in redis.scan_iter(match=keys.rq_scheduler_instance("*"), count=100)
        if await redis.hexists(key, "birth") and not await redis.hexists(key, "death")
    ]
    return sorted(names)


class RQSchedulerBridge:
    """Fires due rq-scheduler jobs into their RQ queues (see the module docstring for the guarantees).

    ``zone`` is the wall clock cron strings are read on (``None``: the process's local time, as rqscheduler).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        clock: Callable[[], datetime] | None = None,
        zone: tzinfo | None = None,
        name: str | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = RQKeys(settings.key_prefix)
        self.stream = _keys.lifecycle_stream(settings.key_prefix)
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.zone = zone
        self.name = name or uuid.uuid4().hex[:12]
        self._scripts = ScriptRegistry(redis, _SOURCES)
        self._skip: set[str] = set()  # jobs found unfireable: looked at again every INSTANCE_CHECK
        self._logged: dict[str, str] = {}  # job id -> the problem logged for it (logged once)
        self._instances: list[str] = []
        self.lock_busy = False

    # ------------------------------------------------------------------ one pass
    async def fire_due(self, now: datetime | None = None) -> list[RQFiring]:
        """Fire everything due at ``now`` under rq-scheduler's lock; ``[]`` if nothing is due or the lock
        is held by someone else (``lock_busy`` then says so)."""
        pinned = now
        now = now or self.clock()
        self.lock_busy = False
        due = await self._due(now)
        if not due:
            return []
        token = f"asyncsched:{self.name}:{time.time():.6f}"
        if not await self.redis.set(self.keys.rq_scheduler_lock, token, ex=LOCK_TTL, nx=True):
            self.lock_busy = True
            return []
        fired: list[RQFiring] = []
        tried: set[str] = set()
        try:
            while due and len(tried) < PASS_LIMIT:
                for job_id, score in due:
                    tried.add(job_id)
                    try:
                        outcome = await self._fire_one(job_id, score, token, now)
                    except ResponseError as exc:  # a key of the wrong type: this job alone is skipped
                        if "WRONGTYPE" not in str(exc):
                            raise
                        self._refuse(job_id, f"a key of the wrong type ({exc})")
                        continue
                    if outcome is _LOST_LOCK:
                        log.warning("lost rq-scheduler's lock during a pass; the rest waits for the next")
                        return fired
                    if isinstance(outcome, RQFiring):
                        fired.append(outcome)
                now = pinned or self.clock()
                due = [d for d in await self._due(now) if d[0] not in tried]
        finally:
            await self._scripts.run("release", [token], [self.keys.rq_scheduler_lock])
        return fired

    async def _due(self, now: datetime) -> list[tuple[str, float]]:
        rows: list[Any] = await self.redis.zrangebyscore(
            self.keys.rq_scheduler_jobs, 0, now.timestamp(), start=0, num=BATCH, withscores=True
        )
        due = [(m.decode(), float(s)) for m, s in rows]
        return [(job_id, score) for job_id, score in due if job_id not in self._skip]

    async def _fire_one(self, job_id: str, score: float, token: str, now: datetime) -> Any:
        for _attempt in range(3):
            raw: Any = await self.redis.hgetall(self.keys.job(job_id))
            job = RQSchedulerJob.from_hash(job_id, score, raw, accept_pickle=self.settings.accept_pickle)
            if job.exists and job.problem:
                self._report(job)
                return None
            step = plan(job, now, self.zone)
            keys, args = self._script_call(job, step, token, now)
            result = as_int(await self._scripts.run("fire", args, keys))
            if result == -1:
                return _LOST_LOCK
            if result == -2:
                continue  # changed under us (a worker finished it, meta edited): read it again
            if result in (0, 3):
                if result == 3:
                    log.info("rq-scheduler job %s has no hash any more; removed from its set", job_id)
                return None
            nxt = None if step.next_score is None else datetime.fromtimestamp(step.next_score, UTC)
            if step.mode == FIRE:
                log.info(
                    "fired rq-scheduler job %s (%s) into queue %s; %s",
                    job_id,
                    job.function or job.description,
                    job.queue,
                    f"next run {nxt.isoformat()}" if nxt else "no further runs",
                )
            else:
                log.warning(
                    "rq-scheduler job %s %s: this run is skipped, next %s",
                    job_id,
                    "was enqueued for this run already (by a firer that stopped before rescheduling it)"
                    if job.enqueued_for_this_tick
                    else f"is still {job.status} from its previous run",
                    nxt.isoformat() if nxt else "none",
                )
            return RQFiring(job_id, job.queue or "", job.next_run_at, nxt, step.mode == FIRE)
        return None  # still changing after three reads: left for the next pass

    def _script_call(
        self, job: RQSchedulerJob, step: Plan, token: str, now: datetime
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of ``rqscheduler_fire.lua`` (see its header) for ``job`` planned as ``step``."""
        keys = [
            self.keys.rq_scheduler_jobs,
            self.keys.rq_scheduler_lock,
            self.keys.job(job.id),
            self.keys.queue(job.queue or ""),
            self.keys.queues,
            self.stream,
        ]
        args: list[Any] = [
            job.id,
            repr(job.score),
            token,
            LOCK_TTL,
            step.mode,
            "" if step.next_score is None else step.next_score,
            job.status or "",
            job.meta_raw or b"",
            step.new_meta or b"",
            codec.fmt_ts(now),
            f"{now.timestamp():.6f}",
            job.queue or "",
            self.settings.lifecycle_maxlen,
            AGENT,
            job.id[:200],
            (job.function or "")[:500],
            DEFAULT_TIMEOUT,
            job.fields.get(JobField.ENQUEUED_AT) or b"",
        ]
        return keys, args

    def _report(self, job: RQSchedulerJob) -> None:
        self._refuse(job.id, job.problem or "")

    def _refuse(self, job_id: str, problem: str) -> None:
        self._skip.add(job_id)
        if self._logged.get(job_id) != problem:
            self._logged[job_id] = problem
            log.error(
                "rq-scheduler job %s is not fired by asyncsched (it stays in rq-scheduler's set): %s",
                job_id,
                problem,
            )

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        """Fire due jobs until cancelled; never raises (Redis outages are logged and waited out)."""
        down = False
        next_instance_check = 0.0
        while True:
            try:
                if time.monotonic() >= next_instance_check:
                    next_instance_check = time.monotonic() + INSTANCE_CHECK
                    await self._check_instances()
                    self._skip.clear()  # look at unfireable jobs again now and then (fixed, or deleted)
                await self.fire_due()
                delay = LOCK_RETRY if self.lock_busy else await self._idle_delay()
                if down:
                    down = False
                    log.info("rq-scheduler jobs are fired again")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not down:
                    log.warning("firing rq-scheduler jobs paused (%s: %s); retrying", type(exc).__name__, exc)
                down = True
                delay = 1.0
            await asyncio.sleep(delay)

    async def _idle_delay(self) -> float:
        now = self.clock().timestamp()
        rows: list[Any] = await self.redis.zrangebyscore(
            self.keys.rq_scheduler_jobs, f"({now}", "+inf", start=0, num=1, withscores=True
        )
        if not rows:
            return POLL
        return max(0.001, min(POLL, float(rows[0][1]) - now + 0.001))

    async def _check_instances(self) -> None:
        names = await live_rqschedulers(self.redis, self.settings.key_prefix)
        if names and names != self._instances:
            log.info(
                "rqscheduler instance(s) %s run on this Redis too: rq-scheduler's jobs are fired by "
                "whichever process holds %s, each once",
                ", ".join(names),
                self.keys.rq_scheduler_lock,
            )
        self._instances = names


_LOST_LOCK = object()
