"""OpenTelemetry spans from enqueue to run, so one trace crosses the queue (the ``otel`` extra).

Off by default, and then free: ``opentelemetry`` is never imported and each hook is one module attribute
check (``_tracing.tracer is None``). On with ``ASYNCSCHED_TRACING=1`` (``Settings.tracing``): the first
component built with it (``TaskQueue``, ``Worker``, ``TaskScheduler``) switches tracing on for the process,
and fails at once with :class:`~asyncsched.exceptions.ConfigurationError` when ``opentelemetry-api`` is not
installed. Tracing goes through the global tracer provider unless :func:`enable` is given one; exporting
(OTLP, console, ...) is the application's choice of SDK.

Spans (``SpanKind`` in brackets):

* ``enqueue <function>`` (producer), on each enqueued job; its context is written into the job's RQ
  ``meta`` as W3C ``traceparent`` (and ``tracestate``), where RQ ignores it and RQ's workers keep it.
* ``run <function>`` (consumer), around the function in the worker (``async def`` and ``def`` jobs alike:
  a thread runs in a copy of the job's context), a child of the enqueue span read back from ``meta``; a
  job without a ``traceparent`` (enqueued by RQ, or before tracing was on) gets a root span. A failed
  run has status ``ERROR`` and the exception recorded.
* ``tick <agent>/<task>`` (internal), around a scheduler's enqueue of a tick: the enqueue span, and so
  the run, belong to the tick's trace.

Attributes: ``messaging.system`` (``rq``), ``messaging.destination.name`` (the queue),
``messaging.message.id`` (the job id), ``asyncsched.function``, ``asyncsched.attempt``,
``asyncsched.outcome``, ``asyncsched.task`` and ``asyncsched.tick``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .exceptions import ConfigurationError
from .rq.jobhash import JobField
from .rq.serializers import Format

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from .config import Settings


class TracedJob(Protocol):
    """What a job's ``run`` span names (:class:`asyncsched.worker._job.ClaimedJob` is one): its ``id``, the
    ``queue`` it was claimed from, its ``hash`` as claimed (function path, description, ``meta`` with the
    trace parent) and which ``attempt`` this run is (1 for the first)."""

    @property
    def id(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def hash(self) -> Mapping[str, bytes]: ...
    @property
    def attempt(self) -> int: ...


class TracedOutcome(Protocol):
    """What a job's ``run`` span records of how it ended (:class:`asyncsched.worker._job.Outcome` is one):
    its ``kind`` (``success``, ``failed``...), and for a failed run the ``error`` line and the exception
    ``exc`` when there is one."""

    @property
    def kind(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def exc(self) -> BaseException | None: ...


_Outcome = TypeVar("_Outcome", bound=TracedOutcome)

__all__ = ["configure", "disable", "enable", "enqueue_meta", "run_traced", "tick_span", "tracer"]

tracer: Any = None
"""The ``opentelemetry.trace.Tracer`` spans are made with; ``None`` while tracing is off."""

_propagator: Any = None
_api: Any = None
TRACE_KEYS = ("traceparent", "tracestate")


def enable(tracer_provider: TracerProvider | None = None) -> None:
    """Switch tracing on for this process (with ``tracer_provider``, default the global one)."""
    global tracer, _propagator, _api
    try:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        raise ConfigurationError(
            "tracing is on (ASYNCSCHED_TRACING) but opentelemetry-api is not installed: "
            "pip install 'asyncsched[otel]' (and an SDK/exporter), or set ASYNCSCHED_TRACING=0"
        ) from None
    from ._version import __version__

    _api, _propagator = trace, TraceContextTextMapPropagator()
    tracer = trace.get_tracer("asyncsched", __version__, tracer_provider=tracer_provider)


def disable() -> None:
    """Switch tracing off again (tests)."""
    global tracer
    tracer = None


def configure(settings: Settings) -> None:
    """Called by each component with its settings: tracing on if they say so (loudly without the package)."""
    if settings.tracing and tracer is None:
        enable()


def enqueue_meta(meta: Mapping[str, Any] | None, function: str, queue: str, job_id: str) -> dict[str, Any]:
    """An ``enqueue`` span for one job; ``meta`` with the span's context added (a new dict)."""
    attributes = {
        "messaging.system": "rq",
        "messaging.operation": "publish",
        "messaging.destination.name": queue,
        "messaging.message.id": job_id,
        "asyncsched.function": function,
    }
    out = dict(meta or {})
    kind = _api.SpanKind.PRODUCER
    with tracer.start_as_current_span(f"enqueue {function}", kind=kind, attributes=attributes):
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
    out.update(carrier)
    return out


def _parent(raw: bytes | None, pickled: bool) -> Any:
    """The context a job's ``meta`` carries (``None``: none, so the run span is a root)."""
    if not raw:
        return None
    from .rq import serializers

    try:
        meta, _ = serializers.loads(raw, accept_pickle=pickled)
    except Exception:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("traceparent"), str):
        return None
    carrier = {k: meta[k] for k in TRACE_KEYS if isinstance(meta.get(k), str)}
    return _propagator.extract(carrier, context=_api.set_span_in_context(_api.INVALID_SPAN))


async def run_traced(job: TracedJob, fmt: Format | str, run: Awaitable[_Outcome]) -> _Outcome:
    """Await ``run`` (the job's execution: an ``Outcome``) inside the job's ``run`` span."""
    h = job.hash
    function = (h.get(JobField.FUNCTION_PATH.value) or h.get(JobField.DESCRIPTION.value) or b"?").decode(
        errors="replace"
    )
    function = function.split("(", 1)[0].replace(":", ".")  # RQ's dotted name, as the enqueue span's
    attributes = {
        "messaging.system": "rq",
        "messaging.operation": "process",
        "messaging.destination.name": job.queue,
        "messaging.message.id": job.id,
        "asyncsched.function": function,
        "asyncsched.attempt": job.attempt,
    }
    parent = _parent(h.get(JobField.META.value), str(fmt) == "pickle")
    if parent is None:  # a root span even inside another span of this process
        parent = _api.set_span_in_context(_api.INVALID_SPAN)
    kind = _api.SpanKind.CONSUMER
    with tracer.start_as_current_span(
        f"run {function}", context=parent, kind=kind, attributes=attributes
    ) as span:
        outcome = await run
        span.set_attribute("asyncsched.outcome", outcome.kind)
        if outcome.error is not None:  # failed, or failed and retried
            if outcome.exc is not None:
                span.record_exception(outcome.exc)
            span.set_status(_api.Status(_api.StatusCode.ERROR, outcome.error))
        return outcome


@contextlib.contextmanager
def tick_span(agent: str, task: str, tick: datetime | None) -> Iterator[None]:
    """A ``tick`` span around a scheduler's enqueue of ``tick`` (``None``: a run-now)."""
    attributes = {"asyncsched.task": f"{agent}/{task}"}
    if tick is not None:
        attributes["asyncsched.tick"] = tick.isoformat()
    with tracer.start_as_current_span(f"tick {agent}/{task}", attributes=attributes):
        yield
