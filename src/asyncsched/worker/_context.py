"""Job progress: ``current_job().progress(...)`` writes ``meta["progress"]`` into the job's RQ hash and
publishes a ``task.progress`` event (the worker's :class:`ProgressReporter`).

The write is a compare-and-set on the hash's ``meta`` field (``progress.lua``): it happens only while the
job is ``started`` by this worker (a cancelled or reaped job writes nothing) and only if ``meta`` did not
change since it was read (else it is read again), so meta the job saved itself (``rq``'s
``job.save_meta()``) is kept. The event is a broadcast ``task.progress`` with ``job_id``, ``queue``,
``attempt``, ``worker``, ``agent_name``, ``task_name``, ``function`` and ``progress``. Each stored report
is also appended to the lifecycle stream (kind ``progress``), from which the Recorder keeps the latest
report on the execution row of the SQL history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._keys import lifecycle_stream
from .._lifecycle import Lifecycle, LifecycleRecord
from .._redis.cluster import is_cluster
from ..events._lifecycle import event_source
from ..exceptions import InvalidValue
from ..rq import serializers
from ..rq._calls import ProgressCall
from ..rq._scripts import Scripts
from ..rq.jobhash import JobField
from ..rq.keys import RQKeys
from ..rq.slots import worker_alias

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ..config import Settings
    from ..events import EventBus
    from ._rqjob import CurrentJob

__all__ = ["MAX_PROGRESS_BYTES", "ProgressReporter", "check_progress"]

log = logging.getLogger("asyncsched.worker")

MAX_PROGRESS_BYTES = 16_384
"""Largest progress value (as JSON)."""
_WAIT = 10.0  # a sync job waits at most this long for its progress to be written


def check_progress(value: object) -> float | dict[str, Any]:
    """A fraction from 0 to 1, or a JSON object of at most :data:`MAX_PROGRESS_BYTES`; else InvalidValue."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0 <= value <= 1:
            raise InvalidValue("progress", f"must be a fraction from 0 to 1 or a JSON object, got {value!r}")
        return float(value)
    if isinstance(value, Mapping):
        try:
            text = json.dumps(dict(value), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidValue("progress", f"must be a JSON object: {exc}") from None
        if len(text) > MAX_PROGRESS_BYTES:
            raise InvalidValue("progress", f"is {len(text)} bytes of JSON, over {MAX_PROGRESS_BYTES}")
        loaded: dict[str, Any] = json.loads(text)
        return loaded
    raise InvalidValue(
        "progress", f"must be a fraction from 0 to 1 or a JSON object, got {type(value).__name__}"
    )


class ProgressReporter:
    """Writes progress for the jobs of one worker (see the module docstring); made by the worker."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, worker_name: str) -> None:
        self.redis = redis
        self.settings = settings
        self.worker_name = worker_name
        self.loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()  # the loop's thread
        self._scripts = Scripts(redis)
        self.keys = RQKeys(settings.key_prefix)
        self.cluster = is_cluster(redis)  # the worker's alias and the stream of the job's queue (_cluster.py)
        self._bus: EventBus | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def report(self, job: CurrentJob, value: object) -> None:
        """``job.progress(value)``: validated here (in the caller); written before returning in a thread,
        in the background on the loop."""
        checked = check_progress(value)
        seq = job.next_progress()
        if threading.get_ident() != self._thread:  # a sync job's thread
            asyncio.run_coroutine_threadsafe(self.write(job, checked, seq), self.loop).result(_WAIT)
            return
        task = self.loop.create_task(self.write(job, checked, seq))
        self._pending.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("progress not recorded: %s", task.exception())

    async def write(self, job: CurrentJob, value: object, seq: int | None = None) -> None:
        """Store ``meta["progress"]`` (compare-and-set) and publish ``task.progress``. Reports of one job
        are stored one at a time in the order they were made (``seq``): one overtaken by a later report
        is dropped."""
        checked = check_progress(value)
        seq = job.next_progress() if seq is None else seq
        if job.progress_lock is None:  # made on the loop, the only place writes run
            job.progress_lock = asyncio.Lock()
        async with job.progress_lock:
            if seq < job.progress_stored or not await self._store(job, checked):
                return
            job.progress_stored = seq
            await self._record(job, checked)
        await self._publish(job, checked)

    async def _record(self, job: CurrentJob, value: Any) -> None:
        """Append the report to the lifecycle stream (for the SQL history), in the order of storing."""
        record = LifecycleRecord(
            Lifecycle.PROGRESS, job.id, job.queue, job.attempt, worker=self.worker_name,
            progress=json.dumps(value), progress_at=time.time(),
        )  # fmt: skip
        stream = lifecycle_stream(self.settings.key_prefix, job.queue, cluster=self.cluster)
        maxlen = self.settings.lifecycle_maxlen
        await self.redis.xadd(stream, record.encode(), maxlen=maxlen, approximate=True)  # type: ignore[arg-type]

    async def _store(self, job: CurrentJob, value: Any) -> bool:
        """The compare-and-set of ``meta`` (re-read when someone else changed it); ``False``: not stored."""
        key = self.keys.job(job.id)
        pickled = job.fmt is not serializers.Format.JSON
        for _ in range(5):
            old: bytes | None = await self.redis.hget(key, JobField.META)  # type: ignore[assignment]
            meta = dict(job.meta)
            if old:
                with contextlib.suppress(Exception):
                    current, _ = serializers.loads(old, accept_pickle=pickled)
                    if isinstance(current, dict):
                        meta = current
            meta["progress"] = value
            new = serializers.dumps(meta, job.fmt)
            worker = worker_alias(self.worker_name, job.queue) if self.cluster else self.worker_name
            done = await self._scripts.call(ProgressCall(self.keys, job.id, worker, old, new))
            if done == 1:
                job.meta.clear()
                job.meta.update(meta)
                return True
            if done == 0:  # no longer running here (cancelled, reaped, finished)
                return False
        log.warning("job %s: progress not recorded (its meta kept changing)", job.id)
        return False

    async def _publish(self, job: CurrentJob, value: Any) -> None:
        if self._bus is None:
            from ..events import EventBus

            self._bus = EventBus(self.redis, settings=self.settings)
        h = job.fields

        def text(name: JobField) -> str | None:
            raw = h.get(name)
            return raw.decode(errors="replace") if raw else None

        agent = text(JobField.AGENT)
        source = event_source(agent)
        payload = {
            "job_id": job.id,
            "queue": job.queue,
            "attempt": job.attempt,
            "worker": self.worker_name,
            "agent_name": agent,
            "task_name": text(JobField.TASK),
            "function": text(JobField.FUNCTION_PATH),
            "progress": value,
        }
        await self._bus.publish("task.progress", source, payload)

    async def aclose(self) -> None:
        """Let progress writes under way finish (briefly), then close the event bus."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=2.0)
        if self._bus is not None:
            with contextlib.suppress(Exception):
                await self._bus.aclose()
