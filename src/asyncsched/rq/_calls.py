"""Typed calls of the wire format's Lua scripts: each record names its fields and derives the script's
``KEYS`` (built by :class:`~asyncsched.rq.keys.RQKeys`) and ``ARGV`` from them, in the order the script
(``scripts/<name>.lua``, whose header documents both) reads them. Run with
:meth:`asyncsched._redis.scripts.ScriptRegistry.call`, whose result is the record's ``parse`` of the reply
(a ``staticmethod``: the narrowing helpers of ``asyncsched._redis.scripts``, or :meth:`ClaimCall.parse`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias, cast

from .._redis.scripts import Reply, as_int, as_list
from .keys import (
    RQKeys,
    claiming_list,
    claiming_registry,
    limit_due,
    limit_keys,
    paused_queue,
    unused_in_slot,
)

__all__ = [
    "CancelCall",
    "ClaimCall",
    "ClaimReply",
    "DeleteFailedCall",
    "EmptyCall",
    "EnqueueCall",
    "FinishCall",
    "HeartbeatCall",
    "LimitsCall",
    "ProgressCall",
    "PromoteCall",
    "ReapCall",
    "ReleaseLocksCall",
    "RequeueCall",
]


@dataclass(frozen=True, slots=True)
class EnqueueCall:
    """``enqueue.lua``: one batch of prepared jobs. ``segments`` is the flat list of segments (runs of jobs
    sharing a header; built by ``asyncsched.queue._enqueue.segments``). ``registry``: on a cluster, the
    set in the queue's slot the script adds the queue's key to (``keys.queue_registered``), in place of
    ``<p>:queues`` (the caller adds to that one)."""

    SCRIPT: ClassVar[str] = "enqueue"
    keys: RQKeys
    stream: str
    maxlen: int
    segments: Sequence[Any]
    registry: str = ""
    parse = staticmethod(as_list)  # per job: 1 written, 0 skipped, or the error text of a refused one

    def to_keys(self) -> list[Any]:
        return [self.stream, self.registry or self.keys.queues]

    def to_args(self) -> list[Any]:
        return [self.keys.prefix, self.maxlen, *self.segments]


@dataclass(frozen=True, slots=True)
class CancelCall:
    """``cancel.lua``: cancel one job (``now`` epoch seconds, ``now_ts`` RQ's timestamp text)."""

    SCRIPT: ClassVar[str] = "cancel"
    keys: RQKeys
    stream: str
    job_id: str
    now: int
    maxlen: int
    now_ts: str
    parse = staticmethod(as_int)

    def to_keys(self) -> list[Any]:
        return [self.keys.job(self.job_id), self.stream]

    def to_args(self) -> list[Any]:
        return [self.keys.prefix, self.job_id, self.now, self.maxlen, self.now_ts]


@dataclass(frozen=True, slots=True)
class RequeueCall:
    """``requeue.lua``: put a failed, stopped or cancelled job back on its queue as a new attempt.
    ``registry``: as :class:`EnqueueCall`'s."""

    SCRIPT: ClassVar[str] = "requeue"
    keys: RQKeys
    stream: str
    job_id: str
    now: int
    now_ts: str
    maxlen: int
    registry: str = ""
    parse = staticmethod(as_int)

    def to_keys(self) -> list[Any]:
        return [self.keys.job(self.job_id), self.stream, self.registry or self.keys.queues]

    def to_args(self) -> list[Any]:
        return [self.keys.prefix, self.job_id, self.now, self.now_ts, self.maxlen]


@dataclass(frozen=True, slots=True)
class _QueueBatchCall:
    """A script that takes up to ``batch`` jobs from one key of ``queue`` (``KEY``: the ``RQKeys`` method
    naming it)."""

    SCRIPT: ClassVar[str]
    KEY: ClassVar[str]
    keys: RQKeys
    queue: str
    batch: int

    def to_keys(self) -> list[Any]:
        return [getattr(self.keys, self.KEY)(self.queue)]

    def to_args(self) -> list[Any]:
        return [self.keys.prefix, self.batch]


@dataclass(frozen=True, slots=True)
class EmptyCall(_QueueBatchCall):
    """``empty.lua``: pop and delete up to ``batch`` queued jobs of ``queue``."""

    SCRIPT: ClassVar[str] = "empty"
    KEY: ClassVar[str] = "queue"
    parse = staticmethod(as_int)


@dataclass(frozen=True, slots=True)
class DeleteFailedCall(_QueueBatchCall):
    """``delete_failed.lua``: delete up to ``batch`` failed jobs of ``queue``."""

    SCRIPT: ClassVar[str] = "delete_failed"
    KEY: ClassVar[str] = "failed"
    parse = staticmethod(as_list)  # {entries taken, jobs deleted}


@dataclass(frozen=True, slots=True)
class ProgressCall:
    """``progress.lua``: compare-and-set a running job's ``meta`` (``old``: the value read, ``None`` if
    there was none; ``new``: the serialized meta to store)."""

    SCRIPT: ClassVar[str] = "progress"
    keys: RQKeys
    job_id: str
    worker: str
    old: bytes | None
    new: bytes
    parse = staticmethod(as_int)

    def to_keys(self) -> list[Any]:
        return [self.keys.job(self.job_id)]

    def to_args(self) -> list[Any]:
        return [self.worker, self.old or "", "1" if self.old else "0", self.new]


# The worker's scripts. The two of its hot path (claim, finish) are made per claim and per batch: their
# records are plain (not frozen) dataclasses, and the keys that only depend on the worker and its queues are
# built once per combination and reused (cached below).


@functools.lru_cache(maxsize=256)
def _claim_keys(
    prefix: str, worker: str, stream: str, queues: tuple[str, ...], cluster: bool
) -> tuple[str, ...]:
    k = RQKeys(prefix)
    # on a cluster one queue per call, and the suspension is checked by the worker (another slot)
    suspended = unused_in_slot(prefix, queues[0], "suspended") if cluster else k.suspended
    out = [stream, suspended, k.worker(worker), k.worker_executions(worker), claiming_list(prefix, worker)]
    for q in queues:
        out += (k.queue(q), k.wip(q), paused_queue(prefix, q))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _finish_keys(prefix: str, worker: str, stream: str, queues: tuple[str, ...]) -> tuple[str, ...]:
    k = RQKeys(prefix)
    out = [stream, k.worker(worker), k.worker_executions(worker)]
    for q in queues:
        out += (k.queue(q), k.wip(q), k.finished(q), k.failed(q), k.scheduled(q))
    return tuple(out)


ClaimReply: TypeAlias = "list[bytes | list[bytes]]"
"""``claim.lua``'s reply (see its header): per job its id, execution id, queue and hash (a flat array of
fields and values), or an error text in place of the hash; ``[b'suspended']`` when workers are suspended."""


@dataclass(slots=True)
class ClaimCall:
    """``claim.lua``: start up to ``n`` jobs of ``queues`` (and the ``given`` ids a blocking pop took from
    ``given_queue``) for ``worker``. ``now``/``now_ts`` are ``""`` for Redis' clock (a claim pipelined behind
    a blocking pop); with ``use_claiming`` the ids in the worker's claiming list (its BLMOVE target) first.
    Execution ids are ``exec_base`` + ``%012x`` of ``exec_first``, ``exec_first + 1``..."""

    SCRIPT: ClassVar[str] = "claim"
    keys: RQKeys
    worker: str
    stream: str
    now: str
    now_ts: str
    lease: int
    n: int
    maxlen: int
    given_queue: str
    use_claiming: bool
    given: Sequence[str]
    queues: Sequence[str]
    exec_base: str
    exec_first: int

    def to_keys(self) -> list[Any]:
        queues = (self.given_queue, *self.queues) if self.given_queue else tuple(self.queues)
        return list(_claim_keys(self.keys.prefix, self.worker, self.stream, queues, self.keys.cluster))

    def to_args(self) -> list[Any]:
        return [
            self.keys.prefix, self.worker, self.now, self.now_ts, self.lease, max(self.n, 0), self.maxlen,
            self.given_queue, "1" if self.use_claiming else "0", len(self.given), *self.given,
            len(self.queues), *self.queues, self.exec_base, self.exec_first,
        ]  # fmt: skip

    @staticmethod
    def parse(reply: Reply) -> ClaimReply:
        """The reply, checked to be an array (its entries are as claim.lua's header says: not checked one
        by one on the claim path)."""
        return cast("ClaimReply", reply if isinstance(reply, list) else as_list(reply))


@dataclass(slots=True)
class FinishCall:
    """``finish.lua``: record a batch of outcomes. ``jobs`` are the executions' ``(job id, execution id,
    queue)``, ``records`` their outcomes packed as the script reads them (``worker._finish.FinishRecord``,
    ``fields`` long), in the same order."""

    SCRIPT: ClassVar[str] = "finish"
    keys: RQKeys
    worker: str
    stream: str
    maxlen: int
    now_ts: str  # RQ's timestamp text
    now: float
    fields: int
    jobs: tuple[tuple[str, str, str], ...]
    records: tuple[str, ...]
    queues: tuple[str, ...] = field(init=False)  # the jobs' queues, each once
    parse = staticmethod(as_list)

    def __post_init__(self) -> None:
        self.queues = tuple({q: None for _, _, q in self.jobs})

    def to_keys(self) -> list[Any]:
        fixed = _finish_keys(self.keys.prefix, self.worker, self.stream, self.queues)
        return [*fixed, *self.keys.execution_keys(self.jobs)]

    def to_args(self) -> list[Any]:
        queues = self.queues
        head = [self.keys.prefix, self.worker, self.maxlen, self.now_ts, repr(self.now), self.fields]
        return [*head, len(queues), *queues, len(self.records), *self.records]

    def one(self, i: int) -> FinishCall:
        """The same call with only the ``i``-th job (to record a refused batch job by job)."""
        return dataclasses.replace(self, jobs=(self.jobs[i],), records=(self.records[i],))


@dataclass(frozen=True, slots=True)
class HeartbeatCall:
    """``heartbeat.lua``: renew ``worker``'s registration and the leases of its ``running`` executions
    (``(job id, execution id, queue)``); ``now`` epoch seconds, ``now_ts`` RQ's text, ``nowf`` float text."""

    SCRIPT: ClassVar[str] = "heartbeat"
    keys: RQKeys
    worker: str
    now: int
    now_ts: str
    nowf: str
    lease: int
    worker_ttl: int
    running: Sequence[tuple[str, str, str]]
    parse = staticmethod(as_list)

    def to_keys(self) -> list[Any]:
        k = self.keys
        out = [k.worker(self.worker), k.worker_executions(self.worker)]
        for job_id, execution_id, queue in self.running:
            out += (k.job(job_id), k.wip(queue), k.execution(job_id, execution_id), k.executions(job_id))
        return out

    def to_args(self) -> list[Any]:
        head = [self.worker, self.now, self.now_ts, self.nowf, self.lease, self.worker_ttl, len(self.running)]
        return head + [x for job_id, execution_id, _ in self.running for x in (job_id, execution_id)]


@dataclass(frozen=True, slots=True)
class ReapCall:
    """``reap.lua``: recover the executions of ``queues`` whose lease lapsed (``policy``: ``requeue`` or
    ``fail``), the ids stuck in RQ's intermediate lists and dead workers' claiming lists. On a cluster one
    queue per call: the claiming registry is the queue's, and RQ 3's ``rl-keys`` (refused there) is
    replaced by a key of the queue's slot that nothing writes."""

    SCRIPT: ClassVar[str] = "reap"
    keys: RQKeys
    stream: str
    now: int
    now_ts: str
    policy: str
    maxlen: int
    exc_string: str  # RQ's encoded traceback of a failed orphan
    error: str
    queues: Sequence[str]
    parse = staticmethod(as_list)

    def to_keys(self) -> list[Any]:
        k = self.keys
        if k.cluster:
            q = k.name(self.queues[0])
            out = [self.stream, claiming_registry(k.prefix, q), unused_in_slot(k.prefix, q, "rl-keys")]
        else:
            out = [self.stream, claiming_registry(k.prefix), k.rate_limit_keys]
        for q in self.queues:
            out += (k.queue(q), k.intermediate(q), k.wip(q), k.failed(q))
        return out

    def to_args(self) -> list[Any]:
        head = [self.keys.prefix, self.now, self.now_ts, self.policy, self.maxlen, self.exc_string]
        return [*head, self.error, len(self.queues), *self.queues]


@dataclass(frozen=True, slots=True)
class PromoteCall:
    """``promote.lua``: move the due scheduled jobs of ``queues`` to their queue, for each queue whose
    scheduler lock ``holder`` holds or takes (``lock_ttl`` s); at most ``limit`` per queue."""

    SCRIPT: ClassVar[str] = "promote"
    keys: RQKeys
    holder: str
    now: str  # epoch s (float text)
    now_ts: str
    lock_ttl: int
    stream: str
    maxlen: int
    limit: int
    queues: Sequence[str]
    parse = staticmethod(as_list)

    def to_keys(self) -> list[Any]:
        k = self.keys
        out = [self.stream]
        for q in self.queues:
            out += (k.scheduler_lock(q), k.scheduled(q), k.queue(q))
        return out

    def to_args(self) -> list[Any]:
        head = [self.keys.prefix, self.holder, self.now, self.now_ts, self.lock_ttl, self.maxlen, self.limit]
        return [*head, len(self.queues), *self.queues]


@dataclass(frozen=True, slots=True)
class ReleaseLocksCall:
    """``release_locks.lua``: release the scheduler locks of ``queues`` that ``holder`` holds."""

    SCRIPT: ClassVar[str] = "release_locks"
    keys: RQKeys
    holder: str
    queues: Sequence[str]
    parse = staticmethod(as_int)

    def to_keys(self) -> list[Any]:
        return [self.keys.scheduler_lock(q) for q in self.queues]

    def to_args(self) -> list[Any]:
        return [self.holder]


@dataclass(frozen=True, slots=True)
class LimitsCall:
    """``limits.lua``: let parked jobs go whose flow limit has room (every key in use with ``tidy``)."""

    SCRIPT: ClassVar[str] = "limits"
    keys: RQKeys
    now: str  # epoch s (float text)
    now_ts: str
    tidy: bool
    parse = staticmethod(as_list)

    def to_keys(self) -> list[Any]:
        p = self.keys.prefix
        return [limit_due(p), limit_keys(p)]

    def to_args(self) -> list[Any]:
        return [self.keys.prefix, self.now, self.now_ts, "1" if self.tidy else "0"]
