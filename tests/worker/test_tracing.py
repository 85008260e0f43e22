"""OpenTelemetry tracing (asyncsched/_tracing.py): enqueue -> run is one trace across the queue, for async
and sync jobs, scheduler ticks and RQ's jobs; off, nothing of opentelemetry is imported."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from asyncsched import _tracing
from asyncsched.config import Settings
from asyncsched.exceptions import ConfigurationError
from asyncsched.queue import TaskQueue
from asyncsched.scheduler import TaskScheduler
from asyncsched.testing import run_burst
from tests.rqhelp import sync_redis
from tests.scheduler.conftest import create_tables


def current_trace() -> list[str]:
    """A job reporting the span it runs in (trace id, span id), from a worker thread."""
    ctx = trace.get_current_span().get_span_context()
    return [f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"]


async def async_current_trace() -> list[str]:
    ctx = trace.get_current_span().get_span_context()
    return [f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"]


def broken() -> None:
    raise ValueError("broken on purpose")


HERE = "tests.worker.test_tracing"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracing.enable(provider)
    yield exporter
    _tracing.disable()
    provider.shutdown()


def named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def hexes(span: ReadableSpan) -> list[str]:
    assert span.context is not None
    return [f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"]


async def test_enqueue_and_run_are_one_trace_for_async_and_sync_jobs(
    redis_url: str, spans: InMemorySpanExporter
) -> None:
    settings = Settings(redis_url=redis_url)
    async with TaskQueue(redis_url, settings=settings) as queue:
        sync_id = await queue.enqueue(f"{HERE}:current_trace")
        async_id = await queue.enqueue(f"{HERE}:async_current_trace")
        record = await queue.job(sync_id)
        assert "traceparent" in (record.meta or {})  # W3C context in RQ's meta
        await run_burst(redis=redis_url, settings=settings)
        for job_id, fn in ((sync_id, "current_trace"), (async_id, "async_current_trace")):
            (enq,) = [s for s in named(spans, "enqueue") if s.attributes["messaging.message.id"] == job_id]
            (run,) = [s for s in named(spans, "run") if s.attributes["messaging.message.id"] == job_id]
            assert enq.name == f"enqueue {HERE}.{fn}"
            assert run.name == f"run {HERE}.{fn}"
            assert enq.kind == SpanKind.PRODUCER
            assert run.kind == SpanKind.CONSUMER
            assert run.parent is not None
            assert enq.context is not None
            assert run.parent.span_id == enq.context.span_id
            assert hexes(run)[0] == hexes(enq)[0]
            assert await queue.result(job_id) == hexes(run)  # the function runs inside the run span
            assert run.attributes["messaging.destination.name"] == "default"
            assert run.attributes["asyncsched.outcome"] == "finished"
            assert run.status.status_code == StatusCode.UNSET


async def test_a_failed_run_is_an_error_span_with_the_exception(
    redis_url: str, spans: InMemorySpanExporter
) -> None:
    settings = Settings(redis_url=redis_url)
    async with TaskQueue(redis_url, settings=settings) as queue:
        job_id = await queue.enqueue(f"{HERE}:broken")
        await run_burst(redis=redis_url, settings=settings)
    (run,) = named(spans, "run")
    assert run.attributes["messaging.message.id"] == job_id
    assert run.status.status_code == StatusCode.ERROR
    assert "broken on purpose" in (run.status.description or "")
    assert [e.name for e in run.events] == ["exception"]


async def test_a_job_of_stock_rq_without_traceparent_gets_a_root_span(
    redis_url: str, spans: InMemorySpanExporter
) -> None:
    import rq

    conn = sync_redis(redis_url)
    job = rq.Queue("default", connection=conn).enqueue(f"{HERE}.current_trace")
    settings = Settings(redis_url=redis_url, accept_pickle=True)
    await run_burst(redis=redis_url, settings=settings)
    (run,) = named(spans, "run")
    assert run.attributes["messaging.message.id"] == job.id
    assert run.parent is None
    assert named(spans, "enqueue") == []


@pytest.mark.cluster  # the scheduler's job ids on a cluster carry their queue's tag
async def test_a_scheduler_tick_is_the_root_of_its_jobs_trace(
    redis_url: str, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/t.db"
    await create_tables(database_url)
    settings = Settings(redis_url=redis_url, database_url=database_url)
    now = [datetime(2026, 6, 1, 12, 0, tzinfo=UTC)]
    async with (
        TaskQueue(redis_url, settings=settings) as queue,
        TaskScheduler(settings=settings, queue=queue, clock=lambda: now[0]) as scheduler,
    ):
        await scheduler.register_task(
            name="traced", type="interval", schedule="1 minute", function=f"{HERE}:current_trace"
        )
        now[0] += timedelta(minutes=1)
        (firing,) = await scheduler.run_pending()
        await run_burst(redis=redis_url, settings=settings)
        assert len(await queue.result(firing.job_id)) == 2
    (tick,) = named(spans, "tick")
    (enq,) = named(spans, "enqueue")
    (run,) = named(spans, "run")
    assert tick.name == "tick default/traced"
    assert tick.parent is None
    assert tick.attributes["asyncsched.tick"] == firing.tick.isoformat()
    assert enq.parent is not None
    assert tick.context is not None
    assert enq.context is not None
    assert enq.parent.span_id == tick.context.span_id
    assert run.parent is not None
    assert run.parent.span_id == enq.context.span_id


def test_on_without_opentelemetry_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import opentelemetry -> ImportError
    with pytest.raises(ConfigurationError, match=r"asyncsched\[otel\]"):
        TaskQueue("memory://no-otel", settings=Settings(tracing=True))
    assert _tracing.tracer is None


def test_the_setting_reads_asyncsched_tracing() -> None:
    assert Settings.from_env({"ASYNCSCHED_TRACING": "1"}).tracing is True
    assert Settings.from_env({}).tracing is False
    with pytest.raises(ConfigurationError, match="ASYNCSCHED_TRACING"):
        Settings.from_env({"ASYNCSCHED_TRACING": "maybe"})


OFF = """
import asyncio, builtins, sys
# redis-py >= 7 imports opentelemetry itself when it is installed (its own observability); what matters is
# that no module of asyncsched asks for it: every import made from asyncsched's code is watched
asked = []
_import = builtins.__import__
def watch(name, globals=None, *args, **kwargs):
    importer = (globals or {}).get("__name__", "")
    if name.startswith("opentelemetry") and importer.startswith("asyncsched"):
        asked.append((importer, name))
    return _import(name, globals, *args, **kwargs)
builtins.__import__ = watch
from asyncsched.config import Settings
from asyncsched.queue import TaskQueue
from asyncsched.testing import run_burst
async def main():
    s = Settings(redis_url="memory://off")
    async with TaskQueue("memory://off", settings=s) as q:
        job = await q.enqueue("tests.jobs:add", args=(1, 2))
        await run_burst(redis="memory://off", settings=s)
        assert await q.result(job) == 3
        assert "traceparent" not in ((await q.job(job)).meta or {})
asyncio.run(main())
from asyncsched import _tracing
print(asked, _tracing.tracer)
"""


def test_off_nothing_of_opentelemetry_is_imported() -> None:
    out = subprocess.run([sys.executable, "-c", OFF], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[] None"
