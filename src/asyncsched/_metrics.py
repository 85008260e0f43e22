"""Per-process Prometheus metrics of workers and schedulers, exposed by the tiny HTTP server of
:mod:`asyncsched._metrics_http` (``asyncsched worker --metrics-port``, ``asyncsched scheduler
--metrics-port``).

Written by hand (text format 0.0.4), with no client library: a worker observes each outcome with a few
dictionary look-ups and two ``bisect`` calls, once per recorded batch, off the claim path, and nothing at
all when metrics are off (``Worker.metrics is None``).

Series (labels ``queue`` and ``function``, the function as RQ's dotted name ``package.module.func``; at
most :data:`MAX_FUNCTIONS` distinct functions per process, the rest counted under ``function="other"``;
queues are the worker's own, so bounded by its command line):

* ``asyncsched_job_wait_seconds{queue,function}`` histogram: enqueue (``enqueued_at``; for a scheduled or
  retried job, when it was put on the queue) to start on this worker.
* ``asyncsched_job_run_seconds{queue,function}`` histogram: start to end of the function.
* ``asyncsched_jobs_total{queue,function,outcome}`` counter: ``success``, ``failed``, ``cancelled``,
  ``retry`` (a failed attempt that will run again, or a job put back at shutdown).
* ``asyncsched_job_retries_total{queue,function}`` counter: attempts that will be retried.
* ``asyncsched_scheduler_tick_lag_seconds`` histogram: a tick's due time to its job being enqueued (this
  scheduler's firings); ``asyncsched_scheduler_ticks_total`` counter.
* Read from Redis at each scrape (deployment-wide, the same on every process): ``asyncsched_scheduler_
  ticks_overdue`` and ``asyncsched_scheduler_overdue_seconds`` (the oldest due tick no replica fired yet),
  ``asyncsched_recorder_lag_entries`` (lifecycle entries not yet written to SQL: undelivered plus
  unacknowledged in the recorder's consumer group), ``asyncsched_rate_limit_waits_total{queue}`` (jobs that
  had to wait for a rate-limit slot: counted in Redis by the scripts, see :func:`count_rate_limit_waits`),
  ``asyncsched_dead_letters`` (entries in the dead-letter stream: ``asyncsched events dead-letters``).
* ``asyncsched_dead_lettered_total{group}`` counter: stream entries this process put in the dead-letter
  stream (poison it could not handle), by consumer group (``recorder``, ``events``, an agent).
* ``asyncsched_event_delivery_lag_seconds{mode}`` histogram: an event's ``created_at`` (set when it is
  published) to its arrival in this process's event bus, ``mode`` ``live`` (pub/sub) or ``durable``
  (streams: includes the time the agent was away). Observed only in a process that serves metrics
  (:func:`enable_process_series`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Iterable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._keys import dead_letter_stream, rate_limit_waits, sched_next
from ._lanes import group_lag, lifecycle_streams
from ._metrics_http import CONTENT_TYPE, serve
from ._redis.cluster import is_cluster
from ._streams import dead_lettered
from .rq.jobhash import JobField

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = [
    "CONTENT_TYPE",
    "MAX_FUNCTIONS",
    "ProcessMetrics",
    "add_flags",
    "count_rate_limit_waits",
    "enable_process_series",
    "expose",
    "serve",
]

_FUNCTION_PATH, _DESCRIPTION = JobField.FUNCTION_PATH.value, JobField.DESCRIPTION.value
_ENQUEUED_AT = JobField.ENQUEUED_AT.value

log = logging.getLogger("asyncsched.metrics")

MAX_FUNCTIONS = 50
"""Distinct ``function`` label values one process reports; later ones are reported as ``other``."""

# fmt: off
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
RUN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
               1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
# fmt: on
BUS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0, 3600.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

_OUTCOME = {
    "finished": "success",
    "failed": "failed",
    "stopped": "cancelled",
    "requeue": "retry",
    "schedule": "retry",
}


class Histogram:
    """Counts per bucket (``le`` upper bounds, plus ``+Inf``), sum and count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str) -> Iterable[str]:
        total = 0
        sep = "," if labels else ""
        for bound, n in zip((*self.bounds, "+Inf"), self.counts, strict=True):
            total += n
            le = bound if isinstance(bound, str) else f"{bound:g}"
            yield f'{name}_bucket{{{labels}{sep}le="{le}"}} {total}'
        inner = f"{{{labels}}}" if labels else ""
        yield f"{name}_sum{inner} {self.sum:.6f}"
        yield f"{name}_count{inner} {total}"


def _family(name: str, kind: str, text: str, *samples: str) -> list[str]:
    """``# HELP``/``# TYPE`` lines of a family, then its sample lines."""
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


bus_lag: dict[str, Histogram] | None = None
"""Event delivery lag by mode (``live``, ``durable``), fed by ``EventBus``; ``None`` (not observed) until
this process serves metrics."""


def enable_process_series() -> None:
    """Start observing this process's event delivery lag (a process serving metrics calls this)."""
    global bus_lag
    if bus_lag is None:
        bus_lag = {"live": Histogram(BUS_BUCKETS), "durable": Histogram(BUS_BUCKETS)}


def observe_delivery(mode: str, created_at: datetime) -> None:
    """An event published at ``created_at`` arrived now (the bus calls this when :data:`bus_lag` is set)."""
    if bus_lag is not None:
        bus_lag[mode].observe(max(time.time() - created_at.timestamp(), 0.0))


def process_lines() -> list[str]:
    """The series every process serving metrics has: event delivery lag, entries dead-lettered."""
    name = "asyncsched_dead_lettered_total"
    out = _family(name, "counter", "Stream entries this process put in the dead-letter stream, by group.")
    out += [f'{name}{{group="{_label(group)}"}} {n}' for group, n in sorted(dead_lettered.items())]
    name = "asyncsched_event_delivery_lag_seconds"
    if bus_lag is not None:
        out += _family(
            name, "histogram", "An event's publication to its arrival in this process's event bus."
        )
    for mode, hist in (bus_lag or {}).items():
        out.extend(hist.lines(name, f'mode="{mode}"'))
    return out


async def count_rate_limit_waits(redis: aioredis.Redis, prefix: str, queue: str, n: int = 1) -> None:
    """Count ``n`` jobs of ``queue`` that had to wait for a rate-limit slot (Python callers; the Lua
    scripts call ``rl_count_wait`` of ``lib_ratelimit.lua``, which increments the same hash)."""
    await redis.hincrby(rate_limit_waits(prefix), queue, n)


class _Series:
    """The histograms and counters of one (queue, function)."""

    __slots__ = ("labels", "outcomes", "run", "wait")

    def __init__(self, queue: str, function: str) -> None:
        self.labels = f'queue="{_label(queue)}",function="{_label(function)}"'
        self.wait = Histogram(WAIT_BUCKETS)
        self.run = Histogram(RUN_BUCKETS)
        self.outcomes: dict[str, int] = {}  # by Outcome.kind (finished, failed, stopped, requeue, schedule)

    def by_outcome(self) -> dict[str, int]:
        """Counts by the ``outcome`` label."""
        out: dict[str, int] = {}
        for kind, n in self.outcomes.items():
            label = _OUTCOME.get(kind, kind)
            out[label] = out.get(label, 0) + n
        return out


class _Clock:
    """RQ timestamp text (``%Y-%m-%dT%H:%M:%S.%fZ``) to epoch seconds, cheaply: the hour is cached."""

    def __init__(self) -> None:
        self._last: bytes = b""
        self._last_value = 0.0
        self._hours: dict[bytes, float] = {}

    def epoch(self, raw: bytes) -> float | None:
        if raw == self._last:
            return self._last_value
        try:
            hour = self._hours.get(raw[:13])
            if hour is None:
                if len(self._hours) > 64:
                    self._hours.clear()
                start = datetime.strptime(raw[:13].decode(), "%Y-%m-%dT%H").replace(tzinfo=UTC)
                hour = self._hours[raw[:13]] = start.timestamp()
            value = hour + int(raw[14:16]) * 60 + float(raw[17:].rstrip(b"Z"))
        except (ValueError, UnicodeDecodeError):
            return None
        self._last, self._last_value = raw, value
        return value


class ProcessMetrics:
    """The metrics one worker or scheduler process exposes. Not thread-safe: fed from its event loop."""

    def __init__(self, max_functions: int = MAX_FUNCTIONS) -> None:
        self.max_functions = max_functions
        self._series: dict[tuple[str, bytes], _Series] = {}
        self._by_label: dict[tuple[str, str], _Series] = {}
        self._functions: set[str] = set()
        self._clock = _Clock()
        self.tick_lag = Histogram(LAG_BUCKETS)
        self.ticks = 0
        self.started = time.time()

    def _series_of(self, queue: str, function: bytes) -> _Series:
        name = function.decode("utf-8", "replace").replace(":", ".") or "unknown"  # RQ's dotted name
        if name not in self._functions:
            if len(self._functions) >= self.max_functions:
                name = "other"
            else:
                self._functions.add(name)
        series = self._by_label.get((queue, name))
        if series is None:
            series = self._by_label[(queue, name)] = _Series(queue, name)
        if len(self._series) < 20 * self.max_functions:  # bounded even with endless distinct names
            self._series[(queue, function)] = series
        return series

    def observe_outcomes(self, outcomes: Iterable[Any]) -> None:
        """Record a worker's batch of ``Outcome`` objects (``asyncsched.worker._job``).

        The hot path of metrics: about a microsecond a job. Runs of jobs of one (queue, function), the
        common case, share one look-up; histograms are updated inline."""
        series_map, clock = self._series, self._clock
        last_key: tuple[str, bytes] | None = None
        series: _Series | None = None
        for o in outcomes:
            job = o.job
            h = job.hash
            # ours name the function; RQ's jobs only describe the call (``module.func(args...)``)
            function = h.get(_FUNCTION_PATH) or (h.get(_DESCRIPTION) or b"").split(b"(", 1)[0]
            key = (job.queue, function)
            if key != last_key or series is None:
                series = series_map.get(key) or self._series_of(job.queue, function)
                last_key = key
                wait, run, kinds = series.wait, series.run, series.outcomes
            started = job.started
            enqueued = h.get(_ENQUEUED_AT)
            if enqueued:
                at = clock._last_value if enqueued == clock._last else clock.epoch(enqueued)
                if at is not None:
                    value = started - at if started > at else 0.0
                    wait.counts[bisect_left(wait.bounds, value)] += 1
                    wait.sum += value
            value = o.ended - started if o.ended > started else 0.0
            run.counts[bisect_left(run.bounds, value)] += 1
            run.sum += value
            kind = o.kind
            kinds[kind] = kinds.get(kind, 0) + 1

    def observe_tick(self, tick: datetime, enqueued: float | None = None) -> None:
        """A scheduler enqueued the job of ``tick`` (at ``enqueued``, default now)."""
        self.ticks += 1
        self.tick_lag.observe(max((enqueued or time.time()) - tick.timestamp(), 0.0))

    def _job_lines(self) -> list[str]:
        merged = {s.labels: s for s in self._by_label.values()}
        out: list[str] = []
        families = (
            ("asyncsched_job_wait_seconds", "histogram", "Enqueue to start on this worker."),
            ("asyncsched_job_run_seconds", "histogram", "Start to end of the job's function."),
            ("asyncsched_jobs_total", "counter", "Jobs ended on this worker, by outcome."),
            ("asyncsched_job_retries_total", "counter", "Failed attempts that will be retried."),
        )
        for name, kind, text in families:
            out += _family(name, kind, text)
            for labels, s in sorted(merged.items()):
                if kind == "histogram":
                    out.extend((s.wait if "wait" in name else s.run).lines(name, labels))
                elif name == "asyncsched_jobs_total":
                    out.extend(
                        f'{name}{{{labels},outcome="{k}"}} {n}' for k, n in sorted(s.by_outcome().items())
                    )
                else:
                    out.append(f"{name}{{{labels}}} {s.by_outcome().get('retry', 0)}")
        return out

    def _scheduler_lines(self) -> list[str]:
        name = "asyncsched_scheduler_tick_lag_seconds"
        out = _family(name, "histogram", "A tick's due time to its job enqueued, by this scheduler.")
        out.extend(self.tick_lag.lines(name, ""))
        name = "asyncsched_scheduler_ticks_total"
        return out + _family(name, "counter", "Ticks this scheduler fired.", f"{name} {self.ticks}")

    async def render(
        self, redis: aioredis.Redis | None = None, prefix: str = "rq", *, worker: bool = True
    ) -> str:
        """The exposition text: this process's series, then what Redis says (when ``redis`` is given)."""
        name = "asyncsched_process_start_time_seconds"
        out = _family(name, "gauge", "Start of this process (epoch seconds).", f"{name} {self.started:.3f}")
        if worker:
            out += self._job_lines()
        else:
            out += self._scheduler_lines()
        out += process_lines()
        if redis is not None:
            out += await redis_lines(redis, prefix)
        return "\n".join(out) + "\n"


async def redis_lines(redis: aioredis.Redis, prefix: str) -> list[str]:
    """Deployment-wide gauges read from Redis: overdue ticks and the recorder's backlog."""
    from .store._recorder import GROUP

    out: list[str] = []
    now_ms = time.time() * 1000
    with contextlib.suppress(Exception):
        async with redis.pipeline(transaction=False) as pipe:
            key = sched_next(prefix, cluster=is_cluster(redis))
            pipe.zcount(key, "-inf", now_ms)  # type: ignore[unused-awaitable]
            pipe.zrange(key, 0, 0, withscores=True)  # type: ignore[unused-awaitable]
            overdue, first = await pipe.execute()
        oldest = max(0.0, (now_ms - first[0][1]) / 1000) if first and first[0][1] <= now_ms else 0.0
        name = "asyncsched_scheduler_ticks_overdue"
        out += _family(name, "gauge", "Due ticks no scheduler replica fired yet.", f"{name} {overdue}")
        name = "asyncsched_scheduler_overdue_seconds"
        out += _family(name, "gauge", "Age of the oldest due tick not fired yet.", f"{name} {oldest:.3f}")
    with contextlib.suppress(Exception):
        streams = await lifecycle_streams(redis, prefix)
        lags = [await group_lag(redis, stream, GROUP) for stream in streams]
        if any(lag is not None for lag in lags):
            lag = sum(lag or 0 for lag in lags)
            name = "asyncsched_recorder_lag_entries"
            out += _family(name, "gauge", "Lifecycle entries not yet written to SQL.", f"{name} {lag}")
    with contextlib.suppress(Exception):
        name, dead = (
            "asyncsched_dead_letters",
            await redis.xlen(dead_letter_stream(prefix, cluster=is_cluster(redis))),
        )
        out += _family(name, "gauge", "Entries in the dead-letter stream (poison no reader could handle).")
        out.append(f"{name} {dead}")
    with contextlib.suppress(Exception):
        waits = await redis.hgetall(rate_limit_waits(prefix))
        name = "asyncsched_rate_limit_waits_total"
        out += _family(name, "counter", "Jobs that had to wait for a rate-limit slot, by queue.")
        for queue, n in sorted(waits.items()):
            text = queue.decode(errors="replace") if isinstance(queue, bytes) else queue
            out.append(f'{name}{{queue="{_label(text)}"}} {int(n)}')
    return out


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--metrics-port`` and ``--metrics-host`` of ``asyncsched worker`` and ``asyncsched scheduler``."""
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (GET /metrics)"
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of the metrics server (default 127.0.0.1)"
    )


async def expose(
    stack: AsyncExitStack, args: argparse.Namespace, redis: aioredis.Redis, prefix: str, *, worker: bool
) -> ProcessMetrics | None:
    """With ``--metrics-port``: new :class:`ProcessMetrics`, served until ``stack`` closes; else ``None``."""
    port = getattr(args, "metrics_port", None)
    if port is None:
        return None
    metrics = ProcessMetrics()
    enable_process_series()
    server = await serve(args.metrics_host, port, lambda: metrics.render(redis, prefix, worker=worker))

    async def close() -> None:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)

    stack.push_async_callback(close)
    log.info("metrics on http://%s:%d/metrics", args.metrics_host, port)
    return metrics
