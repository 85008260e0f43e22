"""Typed calls of the wire format's Lua scripts: each record names its fields and derives the script's
``KEYS`` (built by :class:`~asyncsched.rq.keys.RQKeys`) and ``ARGV`` from them, in the order the script
(``scripts/<name>.lua``, whose header documents both) reads them. Run with
:meth:`asyncsched._redis.scripts.ScriptRegistry.call`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .keys import RQKeys

__all__ = ["CancelCall", "DeleteFailedCall", "EmptyCall", "EnqueueCall", "ProgressCall", "RequeueCall"]


@dataclass(frozen=True, slots=True)
class EnqueueCall:
    """``enqueue.lua``: one batch of prepared jobs. ``segments`` is the flat list of segments (runs of jobs
    sharing a header; built by ``asyncsched.queue._enqueue.segments``)."""

    SCRIPT: ClassVar[str] = "enqueue"
    keys: RQKeys
    stream: str
    maxlen: int
    segments: Sequence[Any]

    def to_keys(self) -> list[Any]:
        return [self.stream, self.keys.queues]

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

    def to_keys(self) -> list[Any]:
        return [self.keys.job(self.job_id), self.stream]

    def to_args(self) -> list[Any]:
        return [self.keys.prefix, self.job_id, self.now, self.maxlen, self.now_ts]


@dataclass(frozen=True, slots=True)
class RequeueCall:
    """``requeue.lua``: put a failed, stopped or cancelled job back on its queue as a new attempt."""

    SCRIPT: ClassVar[str] = "requeue"
    keys: RQKeys
    stream: str
    job_id: str
    now: int
    now_ts: str
    maxlen: int

    def to_keys(self) -> list[Any]:
        return [self.keys.job(self.job_id), self.stream, self.keys.queues]

    def to_args(self) -> list[Any]:
        return [self.keys.prefix, self.job_id, self.now, self.now_ts, self.maxlen]


@dataclass(frozen=True, slots=True)
class EmptyCall:
    """``empty.lua``: pop and delete up to ``batch`` queued jobs of ``queue``."""

    SCRIPT: ClassVar[str] = "empty"
    keys: RQKeys
    queue: str
    batch: int

    def to_keys(self) -> list[Any]:
        return [self.keys.queue(self.queue)]

    def to_args(self) -> list[Any]:
        return [self.keys.prefix, self.batch]


@dataclass(frozen=True, slots=True)
class DeleteFailedCall:
    """``delete_failed.lua``: delete up to ``batch`` failed jobs of ``queue``."""

    SCRIPT: ClassVar[str] = "delete_failed"
    keys: RQKeys
    queue: str
    batch: int

    def to_keys(self) -> list[Any]:
        return [self.keys.failed(self.queue)]

    def to_args(self) -> list[Any]:
        return [self.keys.prefix, self.batch]


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

    def to_keys(self) -> list[Any]:
        return [self.keys.job(self.job_id)]

    def to_args(self) -> list[Any]:
        return [self.worker, self.old or "", "1" if self.old else "0", self.new]
