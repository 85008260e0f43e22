"""RQ's per-job features on our worker: callbacks, ``Repeat``, the current job, refusing what we lack.

* **Callbacks** (``success_callback_name``/``failure_callback_name``/``stopped_callback_name`` and their
  ``*_timeout``, 60 s by default): run as RQ 2.x/3.x runs them, in a worker thread, with RQ's signatures
  ``on_success(job, connection, result)``, ``on_failure(job, connection, type, value, traceback)`` and
  ``on_stopped(job, connection)``; ``job`` is an ``rq.job.Job`` and ``connection`` a synchronous
  ``redis.Redis``. A success callback that raises or overruns fails the job (its failure callback runs);
  a failure callback that raises replaces the job's error; a stopped callback's error is logged. Coroutine
  callbacks are refused with RQ's ``TypeError``.
* **Repeat** (``repeats_left``/``repeat_intervals``): a successful run with repeats left is recorded as
  finished, then re-queued (interval 0) or scheduled (see ``finish.lua``), as ``rq.Repeat.schedule`` does.
* **Current job**: :func:`current_job` inside a job; ``rq.get_current_job()`` too when ``rq`` is installed
  (built only when asked for).
* **Refused**: a hash field naming an RQ feature this worker does not implement (``webhooks``) fails the
  job with a reason naming it, before the function runs.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from ..rq.jobhash import JobField
from ..rq.serializers import Format

if TYPE_CHECKING:
    from rq.job import Job as RQJob

__all__ = [
    "CurrentJob",
    "Features",
    "current_job",
    "features",
    "refused",
    "with_job",
]

log = logging.getLogger("asyncsched.worker")

CALLBACK_TIMEOUT = 60  # rq.defaults.CALLBACK_TIMEOUT

#: hash fields of RQ features this worker does not implement: the job is failed naming the feature
UNSUPPORTED = {JobField.WEBHOOKS.value: "RQ webhooks (rq.Webhook)"}


class JobOutcome(StrEnum):
    """How a run ended, as an ``after_job`` hook sees it (``current_job().outcome``)."""

    FINISHED = "finished"
    FAILED = "failed"  # no retry left (or none asked for)
    STOPPED = "stopped"  # RQ's stop-job, our cancel
    RETRY = "retry"  # failed, and will run again (now or later)
    REQUEUE = "requeue"  # interrupted by a shutdown: back on its queue
    SCHEDULE = "schedule"  # (not seen by hooks today: a later retry is RETRY)


class _Later:
    """State a job gets only when it is used (class-level defaults, not dataclass fields: making a job's
    context costs nothing for what most jobs never touch)."""

    outcome: JobOutcome | None = None  # for after_job hooks
    error: BaseException | None = None  # for after_job: the job's exception
    result: Any = None  # for after_job: the return value of a finished job
    progress_stored: int = 0  # the seq of the last progress written
    progress_lock: Any = None  # one progress write at a time (worker._context)
    _cancelled: bool = False
    _cancel_event: threading.Event | None = None
    _meta: dict[str, Any] | None = None
    _progress_seq: int = 0
    _hash: Mapping[str, bytes] | None = None  # the whole job hash, read on first use


@dataclass(eq=False)
class CurrentJob(_Later):
    """The job running in this context (see :func:`current_job`): its ``id``, ``queue``, ``attempt``,
    :attr:`meta`, the worker's shared :attr:`resources` (set up by its ``on_startup`` hook), a
    cooperative cancel token (:attr:`cancelled`, :meth:`wait_cancelled`) and :meth:`progress`."""

    id: str
    queue: str
    execution_id: str
    attempt: int
    worker_name: str
    fields: Mapping[str, bytes] = field(repr=False)
    """The job-hash fields the worker claimed the job with (those of
    :data:`~asyncsched.rq.jobhash.CLAIMED_FIELDS` not empty); the whole hash is :attr:`hash`."""
    fmt: Format = Format.JSON
    connect: Callable[[], Any] | None = field(default=None, repr=False)
    _rq: RQJob | None = field(default=None, repr=False)
    resources: dict[str, Any] = field(default_factory=dict, repr=False)
    """What the worker's ``on_startup`` hook put in its context (DB pools, clients...), shared by jobs."""
    reporter: Any = field(default=None, repr=False)  # the worker's progress writer (worker._context)
    load_hash: Callable[[str], Mapping[str, bytes]] | None = field(default=None, repr=False)
    """Reads a job's whole hash by its id (the worker's; ``None``: :attr:`hash` is :attr:`fields`)."""

    @property
    def hash(self) -> Mapping[str, bytes]:
        """The job's whole RQ hash (field name -> raw value), read from Redis on first use: one ``HGETALL``
        on the worker's synchronous connection (from an ``async def`` job it holds the event loop for that
        round trip), then kept. Read after the claim: its ``status`` is ``started`` and its ``started_at``,
        ``worker_name`` and ``last_heartbeat`` are this execution's."""
        if self._hash is None:
            self._hash = self.load_hash(self.id) if self.load_hash is not None else self.fields
        return self._hash

    def next_progress(self) -> int:
        """The sequence number of a new progress report (reports are stored in this order)."""
        self._progress_seq += 1
        return self._progress_seq

    @property
    def description(self) -> str | None:
        raw = self.fields.get(JobField.DESCRIPTION)
        return raw.decode(errors="replace") if raw else None

    # ---------------------------------------------------------------- cancel token
    @property
    def cancelled(self) -> bool:
        """``True`` once the job was cancelled (API, CLI, ``TaskQueue.cancel``, RQ's stop-job), timed out,
        or its worker is shutting down. A sync job should check it and return; Python threads cannot be
        killed, so a job that ignores it runs on, and what it returns is discarded."""
        return self._cancelled

    def is_cancelled(self) -> bool:
        """:attr:`cancelled`, as a call."""
        return self._cancelled

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block (a sync job's thread) up to ``timeout`` seconds or until cancelled; ``True`` if cancelled.
        A cancellable ``time.sleep``. Never call it from an ``async def`` job (it would block the loop)."""
        if self._cancelled:
            return True
        if self._cancel_event is None:
            self._cancel_event = threading.Event()
            if self.is_cancelled():  # cancelled between the check and the event's creation
                return True
        return self._cancel_event.wait(timeout)

    def cancel(self) -> None:
        """Set the token (the worker does so; safe from any thread)."""
        self._cancelled = True
        event = self._cancel_event
        if event is not None:
            event.set()

    # ---------------------------------------------------------------- meta and progress
    @property
    def meta(self) -> dict[str, Any]:
        """The job's RQ ``meta`` (as enqueued, plus the progress this job reported)."""
        if self._meta is None:
            self._meta = {}
            raw = self.fields.get(JobField.META)
            if raw:
                from ..rq import serializers

                try:
                    value, _ = serializers.loads(raw, accept_pickle=self.fmt is not Format.JSON)
                except Exception:  # a malformed meta is not the job's problem here
                    value = None
                self._meta = value if isinstance(value, dict) else {}
        return self._meta

    def progress(self, value: float | Mapping[str, Any]) -> None:
        """Report progress: a fraction from 0 to 1, or a JSON object (``{"done": 3, "total": 10}``).

        Stored as ``meta["progress"]`` in the job's RQ hash (so ``rq``'s ``job.meta`` shows it, as do the
        API's ``GET /jobs/{id}`` and the dashboard) and published as a ``task.progress`` event. In a sync
        job it returns once written; in an ``async def`` job it is written in the background (``await
        job.aprogress(...)`` waits). A job no longer running on this worker (cancelled) writes nothing.
        """
        if self.reporter is None:
            raise RuntimeError("progress() needs a job run by an asyncsched worker")
        self.reporter.report(self, value)

    async def aprogress(self, value: float | Mapping[str, Any]) -> None:
        """:meth:`progress`, awaited until written (from an ``async def`` job)."""
        if self.reporter is None:
            raise RuntimeError("aprogress() needs a job run by an asyncsched worker")
        await self.reporter.write(self, value)

    def rq_job(self) -> RQJob:
        """This job as an ``rq.job.Job`` on a synchronous connection (needs the ``rq`` package)."""
        if self._rq is None:
            from rq.job import Job
            from rq.serializers import DefaultSerializer, JSONSerializer

            serializer = JSONSerializer if self.fmt is Format.JSON else DefaultSerializer
            connection = self.connect() if self.connect is not None else None
            job = Job(self.id, connection=connection, serializer=serializer)
            job.restore(dict(self.hash))
            self._rq = job
        return self._rq


_current: contextvars.ContextVar[CurrentJob | None] = contextvars.ContextVar("asyncsched_job", default=None)


def current_job() -> CurrentJob | None:
    """The job this code runs in (on an asyncsched worker), or ``None`` outside a job."""
    return _current.get()


_F = TypeVar("_F", bound=Callable[..., Any])


def with_job(func: _F) -> _F:
    """Decorate a job function to receive its :class:`CurrentJob` (the cancel token, progress...) as its
    first argument, ahead of the arguments it was enqueued with::

        @with_job
        def crawl(job: CurrentJob, urls: list[str]) -> int: ...

        await queue.enqueue(crawl, args=(urls,))

    The function keeps its name (a worker resolves it as usual). Outside a job it raises ``RuntimeError``.
    """

    def job() -> CurrentJob:
        current = _current.get()
        if current is None:
            raise RuntimeError(f"{func.__qualname__} takes the current job: call it as an asyncsched job")
        return current

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            return await func(job(), *args, **kwargs)

        return run_async  # type: ignore[return-value]

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        return func(job(), *args, **kwargs)

    return run  # type: ignore[return-value]


def set_current(job: CurrentJob) -> None:
    """Make ``job`` the current job of this context (a job's own task: its function and threads)."""
    _current.set(job)


class _RQJobStack:
    """Stands in for ``rq.job._job_stack``: inside a job run by our worker its top is that job (an
    ``rq.job.Job``, made on first use); elsewhere (RQ's own workers in this process) RQ's stack answers."""

    def __init__(self, stack: Any) -> None:
        self._stack = stack

    @property
    def top(self) -> Any:
        ours = _current.get()
        if ours is not None:
            return ours.rq_job()
        return self._stack.top

    def __getattr__(self, name: str) -> Any:  # push, pop, ...
        return getattr(self._stack, name)


class _RQJobVar:
    """Stands in for RQ 3's ``rq.job._current_job`` context variable, as :class:`_RQJobStack` for RQ 2."""

    def __init__(self, var: Any) -> None:
        self._var = var

    def get(self, *default: Any) -> Any:
        ours = _current.get()
        if ours is not None:
            return ours.rq_job()
        return self._var.get(*default)

    def __getattr__(self, name: str) -> Any:  # set, reset
        return getattr(self._var, name)


@dataclass
class Features:
    """The RQ features a job hash asks for (``None`` from :func:`features` when it asks for none)."""

    on_success: str = ""
    on_failure: str = ""
    on_stopped: str = ""
    success_timeout: float = CALLBACK_TIMEOUT
    failure_timeout: float = CALLBACK_TIMEOUT
    stopped_timeout: float = CALLBACK_TIMEOUT
    repeats_left: int = 0
    repeat_intervals: list[int] = field(default_factory=list)

    def repeat(self) -> tuple[int, list[int], int] | None:
        """After a success: ``(repeats left, intervals left, seconds to wait)``, as ``rq.Repeat.schedule``
        computes them, or ``None`` when no repeat is due."""
        if self.repeats_left <= 0:
            return None
        intervals = list(self.repeat_intervals)
        wait = intervals[0] if intervals else 0
        if len(intervals) > 1:
            intervals = intervals[1:]
        return self.repeats_left - 1, intervals, wait


# looked for in every job's hash, as plain text (an enum attribute costs more to reach)
_ON_SUCCESS, _ON_FAILURE, _ON_STOPPED = (
    JobField.SUCCESS_CALLBACK_NAME.value,
    JobField.FAILURE_CALLBACK_NAME.value,
    JobField.STOPPED_CALLBACK_NAME.value,
)
_REPEATS_LEFT = JobField.REPEATS_LEFT.value
_FIELDS = (_ON_SUCCESS, _ON_FAILURE, _ON_STOPPED, _REPEATS_LEFT)
_TIMEOUTS = {
    "success": JobField.SUCCESS_CALLBACK_TIMEOUT.value,
    "failure": JobField.FAILURE_CALLBACK_TIMEOUT.value,
    "stopped": JobField.STOPPED_CALLBACK_TIMEOUT.value,
}


def features(h: Mapping[str, bytes]) -> Features | None:
    """Parse the callback and repeat fields of a job hash; ``ValueError`` when one is malformed."""
    if not any(h.get(name) for name in _FIELDS):
        return None
    f = Features(
        on_success=h.get(_ON_SUCCESS, b"").decode(),
        on_failure=h.get(_ON_FAILURE, b"").decode(),
        on_stopped=h.get(_ON_STOPPED, b"").decode(),
    )
    for kind, name in _TIMEOUTS.items():
        raw = h.get(name)
        if raw:
            setattr(f, f"{kind}_timeout", float(raw))
    if h.get(_REPEATS_LEFT):
        f.repeats_left = int(h[_REPEATS_LEFT])
        raw = h.get(JobField.REPEAT_INTERVALS)
        intervals = json.loads(raw) if raw else []
        if not isinstance(intervals, list) or not all(isinstance(i, int) and i >= 0 for i in intervals):
            raise ValueError(f"repeat_intervals must be a JSON list of seconds, got {raw!r}")
        f.repeat_intervals = intervals
    return f


def refused(h: Mapping[str, bytes]) -> str | None:
    """The reason a job asking for an RQ feature this worker lacks is refused, or ``None``."""
    for name, feature in UNSUPPORTED.items():
        value = h.get(name)
        if value and value not in (b"[]", b"null"):
            return (
                f"{feature} requested by the job's {name!r} field is not supported by asyncsched's worker; "
                "run this job on a stock RQ worker"
            )
    return None
