"""Completing: outcomes recorded in batches by ``finish.lua``, as typed records (not counted tuples).

A batch is one :class:`~asyncsched.rq._calls.FinishCall`: its header, the keys of every execution it
records, then one packed :class:`FinishRecord` per job (its fields joined by 0x1e: one argument per job is
far cheaper to send than 30). The field order is the tuple's; the script's header comment lists the same
fields by number.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, NamedTuple

from redis.exceptions import RedisError

from .._lifecycle import Lifecycle
from ..rq import codec
from ..rq._calls import FinishCall
from ..rq.jobhash import JobField
from ._job import ClaimedJob, Outcome, OutcomeKind, result_type
from ._state import REDIS_DOWN, Shared

if TYPE_CHECKING:
    from .._metrics import ProcessMetrics

__all__ = ["Completer", "FinishRecord"]

log = logging.getLogger("asyncsched.worker")

SEP = "\x1e"
_FINISHED = OutcomeKind.FINISHED  # bound once (reaching an enum member costs more, per job)
# the fields recorded from the claim if the hash vanished meanwhile, as plain text (read per job)
_KNOWN = tuple(
    f.value
    for f in (
        JobField.ATTEMPT,
        JobField.AGENT,
        JobField.TASK,
        JobField.FUNCTION_PATH,
        JobField.SCHEDULED_TASK,
    )
)

_RATE_KEY, _LIMITS = JobField.RATE_LIMIT_KEY.value, JobField.LIMITS.value  # claimed only when set


class FinishRecord(NamedTuple):
    """One execution's outcome as ``finish.lua`` reads it (fields 1-30, in this order; '' = none/keep)."""

    id: str
    execution_id: str
    queue: str
    kind: OutcomeKind
    result_type: str
    return_value: str  # base64 of the serialized value
    exc_string: str  # encoded traceback
    job_ttl: str  # '' keep, -1 persist, 0 delete, n
    results_ttl: str  # '' none, -1 persist, n
    registry_score: str
    retries_left: str  # '' keep
    scheduled_score: str
    at_front: str  # '1' / '0'
    started: str  # execution start (epoch s, float)
    ended: str
    working_time: str  # seconds
    life_kind: Lifecycle  # the lifecycle record's kind
    error: str
    traceback: str
    result: str  # capped JSON of the return value
    next_attempt: str  # '' keep
    # the job's hash fields as claimed (the attempt as written, '' if none), for its lifecycle record
    attempt: str
    agent: str
    task_name: str
    function: str
    scheduled_task: str
    # RQ Repeat: repeats left after this run ('' no repeat), intervals left (JSON), run-at (0: now)
    repeats_left: str
    repeat_intervals: str
    repeat_at: str
    limits: str  # '1': claimed with a rate or flow limit (finish.lua then reads them from the hash), else ''

    @classmethod
    def of(cls, o: Outcome) -> FinishRecord:
        j = o.job
        return cls._make((  # _make: the tuple is built at C speed (hot path: once per job)
            j.id, j.execution_id, j.queue, o.kind, str(result_type(o)), o.return_value or "",
            codec.encode_exc(o.exc_text) if o.exc_text else "",
            "" if o.job_ttl is None else str(o.job_ttl),
            "" if o.results_ttl is None else str(o.results_ttl),
            o.registry_score,
            "" if o.retries_left is None else str(o.retries_left),
            str(o.scheduled_at), "1" if o.at_front else "0",
            repr(j.started), repr(o.ended), repr(max(o.ended - j.started, 0.0)),
            o.life_kind, o.error or "",
            o.exc_text if o.kind != _FINISHED and o.exc_text else "",
            o.life_result or "",
            "" if o.next_attempt is None else str(o.next_attempt),
            *_known(j), *_repeat(o), "1" if _RATE_KEY in j.hash or _LIMITS in j.hash else "",
        ))  # fmt: skip

    def pack(self) -> str:
        """The one argument ``finish.lua`` splits on 0x1e (a 0x1e inside a field becomes a space)."""
        packed = SEP.join(self)
        if packed.count(SEP) == len(self) - 1:  # no field holds one (the usual case): nothing to replace
            return packed
        return SEP.join(x.replace(SEP, " ") for x in self)


FIELDS = len(FinishRecord._fields)  # finish.lua's F


def _known(job: ClaimedJob) -> tuple[str, str, str, str, str]:
    h = job.hash
    a, b, c, d, e = (h[k].decode(errors="replace") if h.get(k) else "" for k in _KNOWN)
    return a, b, c, d, e


def _repeat(o: Outcome) -> tuple[str, str, str]:
    if o.repeat is None or o.kind != _FINISHED:
        return "", "", ""
    left, intervals, wait = o.repeat
    return str(left), json.dumps(intervals), str(int(time.time()) + wait if wait else 0)


class Completer:
    """The completer loop: takes the outcomes :class:`Running` queues, records them in batches of up to
    200, and frees their place in the in-flight table."""

    def __init__(self, w: Shared) -> None:
        self.cfg, self.running, self.scripts, self.outage = w.cfg, w.running, w.scripts, w.outage
        self.keys = w.keys
        self._closing = w.signals.closing.is_set
        self.processed = 0
        self.metrics: ProcessMetrics | None = None  # asyncsched._metrics: observes each recorded batch

    async def run(self) -> None:
        done = self.running.done
        while not self._closing():
            first = await done.get()
            batch = [first] if first is not None else []
            while not done.empty() and len(batch) < 200:
                item = done.get_nowait()
                if item is not None:
                    batch.append(item)
            if batch:
                await self.finish(batch)

    def batch(self, outcomes: list[Outcome]) -> FinishCall:
        cfg = self.cfg
        made = [FinishRecord.of(o) for o in outcomes]
        records = tuple(r.pack() for r in made)
        jobs = tuple(r[:3] for r in made)  # (id, execution id, queue): the record's first three fields
        maxlen, now_ts, now = cfg.lifecycle_maxlen, codec.fmt_ts(), time.time()
        return FinishCall(self.keys, cfg.name, cfg.stream, maxlen, now_ts, now, FIELDS, jobs, records)

    async def finish(self, outcomes: list[Outcome]) -> None:
        await self.record_all(outcomes)
        if self.metrics is not None:
            self.metrics.observe_outcomes(outcomes)
        self.processed += len(outcomes)
        self.running.recorded(outcomes)

    async def record_all(self, outcomes: list[Outcome]) -> None:
        """Record a batch (one call; on a cluster one per queue: ``_cluster.ClusterCompleter``)."""
        await self.record(outcomes, self.batch(outcomes))

    async def record(self, outcomes: list[Outcome], batch: FinishCall) -> None:
        """Run finish.lua: retry while Redis is away; if Redis rejects the batch (a key of the wrong type,
        say), record the jobs one by one and give up only on those that fail: their lease lapses and the
        reaper recovers them. The worker goes on either way."""
        delay = 0.05
        while True:
            try:
                await self.scripts.call(batch)
                return
            except REDIS_DOWN as exc:
                self.outage.failed(exc)  # the outcomes are kept and recorded when Redis is back
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except RedisError:
                if len(outcomes) == 1:
                    log.exception(
                        "worker %s: could not record job %s; left to the reaper",
                        self.cfg.name,
                        outcomes[0].job.id,
                    )
                    return
                for i, outcome in enumerate(outcomes):
                    await self.record([outcome], batch.one(i))
                return
