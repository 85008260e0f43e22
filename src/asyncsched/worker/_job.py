"""One claimed job: parsing its hash, running it (event loop or thread) and deciding its outcome."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import logging
import random
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .._lifecycle import Lifecycle, cap_result
from ..exceptions import FunctionNotAllowed, InvalidJob, JobTimeout, SerializationError, UnsafeJob
from ..queue._functions import import_function
from ..queue._models import parse_intervals, retry_interval
from ..queue._retry import backoff_wait, retry_matches
from ..rq import codec
from ..rq.codec import ResultType
from ..rq.jobhash import JobField as F
from ..rq.serializers import Format
from ._rqjob import CurrentJob, Features, features, refused

__all__ = ["ClaimedJob", "Outcome", "OutcomeKind", "after_run", "execute", "failure"]

log = logging.getLogger("asyncsched.worker")

DEFAULT_RESULT_TTL = 500  # rq.defaults.DEFAULT_RESULT_TTL
DEFAULT_FAILURE_TTL = 31_536_000  # rq.defaults.DEFAULT_FAILURE_TTL (one year)
STOPPED_TEXT = "Job stopped by user, work-horse terminated."  # RQ's text for a stopped job
_uniform = random.uniform  # the draw of full jitter (a seam for tests)

# The job-hash fields read here, as plain text: looked up per job (an enum attribute costs more to reach)
_ATTEMPT, _RETRY, _RETRY_INTERVALS = (f.value for f in (F.ATTEMPT, F.RETRY, F.RETRY_INTERVALS))
_RETRIES_LEFT, _FAILURE_TTL, _RESULT_TTL = (f.value for f in (F.RETRIES_LEFT, F.FAILURE_TTL, F.RESULT_TTL))
_AT_FRONT_ON_RETRY, _DATA, _TIMEOUT = (f.value for f in (F.ENQUEUE_AT_FRONT_ON_RETRY, F.DATA, F.TIMEOUT))


def _int(h: Mapping[str, bytes], name: str) -> int | None:
    raw = h.get(name)
    if not raw:
        return None
    return int(raw)


@dataclass(eq=False)
class ClaimedJob:
    """A job this worker marked started (one execution of it)."""

    id: str
    execution_id: str
    queue: str
    hash: dict[str, bytes]  # the fields claim.lua returned (rq.jobhash.CLAIMED_FIELDS not empty), not all
    started: float = field(default_factory=time.time)
    stop_reason: str | None = None  # "stopped" (RQ stop-job / our cancel) or "shutdown"
    is_async: bool = False
    features: Features | None = None  # RQ callbacks / Repeat asked for by the hash
    context: CurrentJob | None = None  # what the job sees as current_job() (its cancel token)

    @property
    def attempt(self) -> int:
        try:
            return _int(self.hash, _ATTEMPT) or 1
        except ValueError:
            return 1


class OutcomeKind(StrEnum):
    """How an execution ended, as ``finish.lua`` records it (its field 4)."""

    FINISHED = "finished"  # returned: RQ's finished registry
    FAILED = "failed"  # raised, no retry left: RQ's failed registry
    STOPPED = "stopped"  # stopped on request (RQ stop-job, our cancel)
    REQUEUE = "requeue"  # back on its queue now (a retry without delay, or a shutdown)
    SCHEDULE = "schedule"  # retried later: RQ's scheduled registry


# bound once: reaching an enum member costs about 0.3 µs on Python 3.11, and these are reached per job
_FINISHED = OutcomeKind.FINISHED
_SUCCESSFUL, _UNSUCCESSFUL = int(ResultType.SUCCESSFUL), int(ResultType.FAILED)


@dataclass
class Outcome:
    """What ``finish.lua`` records for one execution."""

    job: ClaimedJob
    kind: OutcomeKind
    ended: float = field(default_factory=time.time)
    return_value: str | None = None  # base64 of the serialized value
    exc_text: str | None = None
    error: str | None = None
    life_kind: Lifecycle = Lifecycle.SUCCESS  # the lifecycle record's kind
    life_result: str | None = None
    retries_left: int | None = None
    scheduled_at: int = 0
    next_attempt: int | None = None
    at_front: bool = False
    job_ttl: int | None = None
    results_ttl: int | None = None
    registry_score: str = "+inf"
    value: Any = None  # the return value (for a success callback)
    exc: BaseException | None = None  # the exception of a failed run (for a failure callback)
    repeat: tuple[int, list[int], int] | None = None  # RQ Repeat: (repeats left, intervals, wait s)


def _error_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text


def _retry_wait(h: Mapping[str, bytes], retries_left: int, exc: BaseException | None) -> float | None:
    """Seconds before the next attempt, or ``None`` when the job is not retried: RQ's rule
    (``retries_left``/``retry_intervals``), refined by our ``asyncsched_retry`` policy (backoff with
    jitter, computed now; only on the named exception types). ``ValueError`` when a field is malformed."""
    raw = h.get(_RETRY)
    if not raw:
        return retry_interval(parse_intervals(h.get(_RETRY_INTERVALS)), retries_left)
    policy = json.loads(raw)
    if policy.get("on") and not retry_matches(policy["on"], exc):
        return None
    if policy.get("backoff") != "exponential":
        return retry_interval(parse_intervals(h.get(_RETRY_INTERVALS)), retries_left)
    n = int(policy["max"]) - retries_left + 1  # this is the n-th retry
    return backoff_wait(policy, max(n, 1), _uniform)


def _failure(
    job: ClaimedJob, exc_text: str, *, retry: bool = True, exc: BaseException | None = None
) -> Outcome:
    """A failed attempt: retried as RQ would (``retries_left``/``retry_intervals``, or our backoff
    policy; see :func:`_retry_wait`), else failed."""
    h = job.hash
    wait: float | None = None
    try:
        retries_left = _int(h, _RETRIES_LEFT)
        failure_ttl = _int(h, _FAILURE_TTL)
        if retry and retries_left is not None and retries_left > 0:
            wait = _retry_wait(h, retries_left, exc)
    except (ValueError, TypeError, KeyError):
        retries_left, failure_ttl, wait = None, None, None
    now = time.time()
    if wait is not None and retries_left is not None:
        return Outcome(
            job,
            OutcomeKind.SCHEDULE if wait else OutcomeKind.REQUEUE,
            ended=now,
            exc_text=exc_text,
            error=_error_line(exc_text),
            life_kind=Lifecycle.RETRY,
            retries_left=retries_left - 1,
            scheduled_at=int(now + wait),  # RQ's scheduled registry: whole seconds
            next_attempt=job.attempt + 1,
            at_front=h.get(_AT_FRONT_ON_RETRY) == b"1",
        )
    ttl = DEFAULT_FAILURE_TTL if failure_ttl is None else failure_ttl
    return Outcome(
        job,
        OutcomeKind.FAILED,
        ended=now,
        exc_text=exc_text,
        error=_error_line(exc_text),
        life_kind=Lifecycle.FAILED,
        job_ttl=ttl,
        results_ttl=failure_ttl,  # RQ: the failure stream only expires when failure_ttl is set
        registry_score=str(int(now) + ttl) if ttl >= 0 else "+inf",
    )


failure = _failure
"""A failed attempt (retried per the job's policy): for the worker's hooks."""


def stopped(job: ClaimedJob) -> Outcome:
    """A job stopped on request (RQ's stop-job or our cancel): RQ's ``stopped`` status."""
    out = _failure(job, STOPPED_TEXT, retry=False)
    out.kind = OutcomeKind.STOPPED
    out.life_kind = Lifecycle.CANCELLED
    return out


def put_back(job: ClaimedJob) -> Outcome:
    """A job interrupted by shutdown (or lost by its worker): back on its queue as a new attempt."""
    return Outcome(
        job,
        OutcomeKind.REQUEUE,
        error="worker shut down before the job finished; re-queued",
        life_kind=Lifecycle.RETRY,
        next_attempt=job.attempt + 1,
    )


def _success(job: ClaimedJob, value: Any, fmt: Format, max_bytes: int | None = None) -> Outcome:
    if type(value).__name__ == "Retry" and type(value).__module__.split(".")[0] == "rq":
        reason = (
            "a job returning rq.Retry (RQ 3's retry-by-return) is not supported by asyncsched's worker; "
            "raise an exception and enqueue with retry=Retry(...) instead"
        )
        log.warning("job %s refused: %s", job.id, reason)
        return _failure(job, f"asyncsched.exceptions.InvalidJob: {reason}", retry=False)
    try:
        encoded = codec.encode_value(value, fmt)
    except SerializationError as exc:
        return _failure(job, f"asyncsched.exceptions.SerializationError: return value: {exc}")
    if max_bytes is not None and encoded is not None and len(encoded) * 3 // 4 > max_bytes:  # base64
        size = len(encoded) * 3 // 4
        text = f"return value of {size} bytes is over the limit of {max_bytes} (ASYNCSCHED_MAX_RESULT_BYTES)"
        return _failure(job, f"asyncsched.exceptions.InvalidValue: {text}", retry=False)
    try:
        result_ttl = _int(job.hash, _RESULT_TTL)
    except ValueError:
        result_ttl = None
    ttl = DEFAULT_RESULT_TTL if result_ttl is None else result_ttl
    now = time.time()
    return Outcome(
        job,
        _FINISHED,
        ended=now,
        return_value=encoded,  # life_kind: Lifecycle.SUCCESS, the default
        life_result=cap_result(value),
        job_ttl=ttl,
        results_ttl=ttl,
        registry_score="+inf" if ttl < 0 else str(int(now) + ttl),
        value=value,
        repeat=job.features.repeat() if job.features is not None else None,
    )


@dataclass
class Prepared:
    """A job ready to call, or the outcome that replaces calling it."""

    func: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    fmt: Format = Format.JSON
    timeout: float | None = None
    outcome: Outcome | None = None
    max_result_bytes: int | None = None


def prepare(
    job: ClaimedJob, *, accept_pickle: bool, default_timeout: int, allow: tuple[str, ...] | None = None
) -> Prepared:
    """Decode and import; a refused, malformed or unimportable job becomes a failed outcome (no retry).

    The function is resolved by the one rule (``import_function``): a name that does not resolve to a
    function defined in the module it names (or, with ``allow``, is not allowed) is never called.
    """
    h = job.hash
    try:
        if _DATA not in h:
            raise InvalidJob("job hash has no 'data' field")
        name, args, kwargs, fmt = codec.decode_data(h[_DATA], accept_pickle=accept_pickle)
        reason = refused(h)
        if reason is not None:
            raise InvalidJob(reason)
        func = import_function(name, allow=allow)
        timeout = _int(h, _TIMEOUT)
        job.features = features(h)
    except UnsafeJob as exc:
        return Prepared(outcome=_failure(job, f"asyncsched.exceptions.UnsafeJob: {exc}", retry=False))
    except InvalidJob as exc:
        log.warning("job %s refused: %s", job.id, exc)
        return Prepared(outcome=_failure(job, f"asyncsched.exceptions.InvalidJob: {exc}", retry=False))
    except FunctionNotAllowed as exc:
        text = f"asyncsched.exceptions.FunctionNotAllowed: {exc}"
        return Prepared(outcome=_failure(job, text, retry=False))
    except Exception as exc:  # malformed hash: bad zlib/JSON, bad ints
        text = f"asyncsched.exceptions.InvalidJob: malformed job hash: {type(exc).__name__}: {exc}"
        return Prepared(outcome=_failure(job, text, retry=False))
    if timeout is None:
        timeout = default_timeout
    job.is_async = inspect.iscoroutinefunction(func)
    return Prepared(func, args, kwargs, fmt, None if timeout == -1 else float(timeout))


async def on_loop(prep: Prepared, executor: Executor) -> Any:
    """The loop executor: an ``async def`` job awaited on the worker's event loop within its timeout."""
    assert prep.func is not None
    async with asyncio.timeout(prep.timeout):
        return await prep.func(*prep.args, **prep.kwargs)


async def in_thread(prep: Prepared, executor: Executor) -> Any:
    """The thread executor: a ``def`` job called in ``executor`` (with the caller's context) within its
    timeout. A thread cannot be interrupted: on time-out or stop the job is recorded and the thread's
    eventual result is discarded (its cancel token is set)."""
    assert prep.func is not None
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, prep.func, *prep.args, **prep.kwargs)
    future = loop.run_in_executor(executor, call)
    async with asyncio.timeout(prep.timeout):
        value = await asyncio.shield(future)
    if inspect.isawaitable(value):
        async with asyncio.timeout(prep.timeout):
            value = await value
    return value


async def execute(job: ClaimedJob, prep: Prepared, executor: Executor) -> Outcome:
    """Run a prepared job on the loop or in a thread (:func:`on_loop`, :func:`in_thread`: the executor
    seam); every exception becomes an outcome (the worker goes on)."""
    if prep.outcome is not None:
        return prep.outcome
    try:
        value = await (on_loop if job.is_async else in_thread)(prep, executor)
    except TimeoutError:
        if job.context is not None:
            job.context.cancel()  # a sync job's thread runs on: tell it to stop
        if job.stop_reason is not None:
            raise
        name = f"{JobTimeout.__module__}.{JobTimeout.__name__}"
        message = f"Task exceeded maximum timeout value ({prep.timeout:g} seconds)"
        timed_out = JobTimeout(message)
        out = _failure(job, f"{name}: {message}", exc=timed_out)
        out.exc = timed_out
        return out
    except asyncio.CancelledError:
        if job.stop_reason == "stopped":
            return stopped(job)
        if job.stop_reason == "shutdown":
            return put_back(job)
        raise
    except Exception as exc:
        out = _failure(job, traceback.format_exc(), exc=exc)
        out.exc = exc
        return out
    return _success(job, value, prep.fmt, prep.max_result_bytes)


async def after_run(job: ClaimedJob, outcome: Outcome, executor: Executor, ctx: CurrentJob) -> Outcome:
    """Run the job's RQ callbacks for ``outcome`` (see :mod:`._rqjob`); the outcome they leave."""
    f = job.features
    if f is None:
        return outcome
    if outcome.kind == _FINISHED and f.on_success:
        try:
            await _callback(executor, ctx, f.on_success, f.success_timeout, outcome.value)
        except Exception as cb_error:  # RQ: a failing success callback fails the job
            outcome = _failure(job, "".join(traceback.format_exception(cb_error)), exc=cb_error)
            outcome.exc = cb_error
    if outcome.exc is not None and f.on_failure:
        err = outcome.exc
        try:
            await _callback(executor, ctx, f.on_failure, f.failure_timeout, type(err), err, err.__traceback__)
        except Exception as error:  # RQ: it replaces the job's error
            log.exception("job %s: error while executing failure callback", job.id)
            outcome = _failure(job, "".join(traceback.format_exception(error)), exc=error)
            outcome.exc = error
    if outcome.kind == OutcomeKind.STOPPED and f.on_stopped:
        # not awaited: the job's task was just cancelled; the outcome does not depend on it (as in RQ)
        stopped_call = _callback(executor, ctx, f.on_stopped, f.stopped_timeout)
        task = asyncio.get_running_loop().create_task(stopped_call)
        _callbacks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(functools.partial(_log_stopped_callback, job.id))
    return outcome


async def _callback(executor: Executor, ctx: CurrentJob, name: str, seconds: float, *args: Any) -> None:
    """Call RQ callback ``name(rq_job, connection, *args)`` in a worker thread within ``seconds``."""

    def call() -> None:
        func = import_function(name)
        if inspect.iscoroutinefunction(func):
            raise TypeError("Coroutine callbacks are not supported")  # as RQ
        rq_job = ctx.rq_job()
        func(rq_job, rq_job.connection, *args)

    future = asyncio.get_running_loop().run_in_executor(executor, contextvars.copy_context().run, call)
    try:
        async with asyncio.timeout(seconds):
            await asyncio.shield(future)
    except TimeoutError:
        message = f"Callback {name} exceeded its timeout ({seconds:g} seconds)"
        raise JobTimeout(message) from None


_callbacks: set[asyncio.Task[None]] = set()  # stopped callbacks still running


def _log_stopped_callback(job_id: str, task: asyncio.Task[None]) -> None:
    _callbacks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("job %s: error while executing stopped callback: %s", job_id, task.exception())


def result_type(outcome: Outcome) -> int:
    """The result stream ``type`` for an outcome."""
    return _SUCCESSFUL if outcome.kind == _FINISHED else _UNSUCCESSFUL
