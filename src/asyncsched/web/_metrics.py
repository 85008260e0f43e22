"""Prometheus text exposition (format 0.0.4), written by hand: no client library needed.

Series:

* ``asyncsched_up{backend}`` — 1 when Redis / the database answered this scrape.
* ``asyncsched_queue_jobs{queue,state}`` — jobs per queue and state (from Redis registries).
* ``asyncsched_workers`` and ``asyncsched_worker_heartbeat_age_seconds{worker}``.
* ``asyncsched_scheduled_tasks{enabled}`` — scheduled task definitions.
* ``asyncsched_executions{status}`` — execution history rows per status.
* ``asyncsched_live_events_total`` / ``asyncsched_live_clients`` — the live feed of this process.
* ``asyncsched_http_requests_total{operation,code}`` — requests this router answered.
* ``asyncsched_scheduler_ticks_overdue``, ``asyncsched_scheduler_overdue_seconds`` and
  ``asyncsched_recorder_lag_entries`` (:func:`asyncsched._metrics.redis_lines`). Job wait/run histograms
  are per worker process: ``asyncsched worker --metrics-port``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from ._health import ping_db, ping_redis
from ._schemas import STATUSES
from ._services import Services

if TYPE_CHECKING:
    from ..store._history_loss import HistoryLoss

__all__ = ["RequestCounter", "render_metrics"]

log = logging.getLogger("asyncsched.web")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
T = TypeVar("T")


class RequestCounter:
    """Requests answered, per operation and status code."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, int]] = collections.Counter()

    def add(self, operation: str, code: int) -> None:
        self.counts[(operation, code)] += 1


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: object) -> None:
        if labels:
            inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{inner}}} {value:g}")
        else:
            self.lines.append(f"{name} {value:g}")


async def _try(what: str, call: Callable[[], Awaitable[T]]) -> T | None:
    """``call()``, or ``None`` when it fails or takes over 5 s (its series are left out of the scrape)."""
    try:
        async with asyncio.timeout(5.0):
            return await call()
    except Exception as exc:
        log.debug("metrics: %s unavailable: %s", what, exc)
        return None


async def _history_loss(services: Services) -> HistoryLoss:
    from ..store._history_loss import history_loss

    return await history_loss(await services.redis(), services.settings.key_prefix)


async def render_metrics(services: Services, requests: RequestCounter) -> str:
    """The exposition text for one scrape; a backend that fails only drops its series (``up`` says 0)."""
    out = _Out()
    redis_ok = bool(await _try("redis", lambda: ping_redis(services)))
    db_ok = bool(await _try("database", lambda: ping_db(services)))
    out.family("asyncsched_up", "gauge", "Whether a backend answered this scrape.")
    out.sample("asyncsched_up", 1 if redis_ok else 0, backend="redis")
    out.sample("asyncsched_up", 1 if db_ok else 0, backend="database")
    if redis_ok:
        await _redis_series(services, out)
    if db_ok:
        await _database_series(services, out)
    _process_series(services, requests, out)
    return "\n".join(out.lines) + "\n"


async def _redis_series(services: Services, out: _Out) -> None:
    """History lost, jobs per queue and state, workers and their heartbeats, overdue ticks and the
    recorder's backlog (:func:`asyncsched._metrics.redis_lines`)."""
    from .._metrics import redis_lines

    loss = await _try("history loss", lambda: _history_loss(services))
    if loss is not None:
        out.family(
            "asyncsched_history_lost_total",
            "counter",
            "Job lifecycle records dropped before the Recorder recorded them (executions: unknown).",
        )
        out.sample("asyncsched_history_lost_total", loss.lost)
    queue = await _try("queue", services.queue)
    counts = await _try("queue counts", queue.queue_counts) if queue is not None else None
    if counts is not None:
        out.family("asyncsched_queue_jobs", "gauge", "Jobs per queue and state.")
        for name, states in sorted(counts.items()):
            for state, n in sorted(states.items()):
                out.sample("asyncsched_queue_jobs", n, queue=name, state=state)
    workers = await _try("workers", queue.workers) if queue is not None else None
    if workers is not None:
        out.family("asyncsched_workers", "gauge", "Registered workers.")
        out.sample("asyncsched_workers", len(workers))
        out.family("asyncsched_worker_heartbeat_age_seconds", "gauge", "Seconds since a worker's heartbeat.")
        now = datetime.now(UTC)
        for worker in workers:
            beat = worker.last_heartbeat
            if beat is not None:
                beat = beat if beat.tzinfo else beat.replace(tzinfo=UTC)
                age = max(0.0, (now - beat).total_seconds())
                out.sample("asyncsched_worker_heartbeat_age_seconds", round(age, 3), worker=worker.name)
    client = await _try("redis", services.redis)
    out.lines += await redis_lines(client, services.settings.key_prefix) if client is not None else []


async def _database_series(services: Services, out: _Out) -> None:
    """Scheduled tasks (enabled or not) and execution history rows per status."""
    scheduler = await _try("scheduler", services.scheduler)
    tasks = await _try("tasks", scheduler.list_tasks) if scheduler is not None else None
    if tasks is not None:
        enabled = sum(1 for t in tasks if t.enabled)
        out.family("asyncsched_scheduled_tasks", "gauge", "Scheduled task definitions.")
        out.sample("asyncsched_scheduled_tasks", enabled, enabled="true")
        out.sample("asyncsched_scheduled_tasks", len(tasks) - enabled, enabled="false")
    repo = await _try("executions", services.executions)
    counts = await _try("execution counts", repo.counts) if repo is not None else None
    if counts is not None:
        out.family("asyncsched_executions", "gauge", "Execution history rows per status.")
        for status in STATUSES:
            out.sample("asyncsched_executions", int(counts.get(status, 0)), status=status)


def _process_series(services: Services, requests: RequestCounter, out: _Out) -> None:
    """This process's live feed, its worker's and scheduler's series (``asyncsched run``), the event
    bus's delivery lag and the requests this router answered."""
    from .. import _metrics

    live = services.live_if_started()
    if live is not None:
        out.family("asyncsched_live_events_total", "counter", "Events received by this process's live feed.")
        out.sample("asyncsched_live_events_total", live.received)
        out.family("asyncsched_live_clients", "gauge", "Connected live-event (SSE) clients.")
        out.sample("asyncsched_live_clients", live.clients)
    metrics = services.process_metrics
    if metrics is not None:  # `asyncsched run`: its worker's job histograms, its scheduler's tick lag
        out.lines += metrics._job_lines() + metrics._scheduler_lines()
    out.lines += _metrics.process_lines()
    out.family("asyncsched_http_requests_total", "counter", "API requests answered.")
    for (operation, code), n in sorted(requests.counts.items()):
        out.sample("asyncsched_http_requests_total", n, operation=operation, code=code)
