"""``asyncsched run`` for real: a subprocess on the zero-configuration defaults, its log, HTTP, SSE, Ctrl-C.

Also the live event stream of an in-process :class:`Runtime` (filters and ``Last-Event-ID`` replay).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asyncsched._redis import reset_memory_servers
from asyncsched.config import Settings
from asyncsched.runtime import Runtime

from ..servers import free_port
from .procs import Process


def test_run_command_fires_logs_serves_and_stops_on_ctrl_c(
    run_process: tuple[Process, str], project: Path
) -> None:
    process, url = run_process
    process.expect("loaded 2 task(s) from tasks.yaml")
    process.expect("dashboard http://127.0.0.1:")
    fired = process.expect("fired  ticker")
    assert "apptasks:tick" in fired
    result = process.expect("success ticker")
    assert '{"ticked": 7}' in result

    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/health").json()["status"] == "ok"
        tasks = client.get("/tasks").json()["items"]
        assert sorted(t["name"] for t in tasks) == ["noter", "ticker"]
        with client.stream("GET", "/events/stream", params={"event_type": "task.completed"}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            events = [next_sse_event(lines) for _ in range(4)]  # two tasks fire each second
        assert {e["event_type"] for e in events} == {"task.completed"}
        assert "ticker" in {e["payload"]["task_name"] for e in events}

        # The event log is on under `asyncsched run`: the runtime's system.startup and the events a sync
        # task function published through the sync facade both reach the API's (SQL) event list.
        deadline = time.monotonic() + 60
        while True:
            kinds = {e["event_type"] for e in client.get("/events", params={"limit": 200}).json()["items"]}
            if {"system.startup", "app.noted"} <= kinds or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert {"system.startup", "app.noted"} <= kinds

    assert (project / "asyncsched.db").exists()  # the embedded default: a SQLite file in the cwd
    process.proc.send_signal(signal.SIGINT)
    process.expect("stopping gracefully")
    process.expect("asyncsched.run: stopped")
    assert process.proc.wait(60) == 0


def next_sse_event(lines: Iterator[str]) -> dict[str, Any]:
    """The data of the next SSE event in ``lines`` (comments and retry lines skipped)."""
    for line in lines:
        if line.startswith("data:"):
            data: dict[str, Any] = json.loads(line[5:].strip())
            return data
    raise AssertionError("stream ended")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Runtime]:
    reset_memory_servers()
    settings = Settings(
        redis_url="memory://web-sse",
        database_url=f"sqlite+aiosqlite:///{tmp_path}/sse.db",
        port=free_port(),
        allowed_functions=("tests.web.webtasks",),
    )
    async with Runtime(settings) as runtime:
        yield runtime
    reset_memory_servers()


async def next_event(lines: AsyncIterator[str]) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data:"):
            data: dict[str, Any] = json.loads(line[5:].strip())
            return data
    raise AssertionError("stream ended")


async def test_event_stream_filters_and_replays(served: Runtime) -> None:
    base = f"{served.url}/api/scheduler"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        async with client.stream("GET", "/events/stream", params={"event_type": "demo.*"}) as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == "retry: 3000"
            bus = served.services and await served.services.bus()
            assert bus is not None
            await bus.publish("other.thing", "tester", {"n": 0})
            first = await bus.publish("demo.one", "tester", {"n": 1})
            await bus.publish("demo.two", "tester", {"n": 2}, target_agent="someone")
            one = await next_event(lines)
            two = await next_event(lines)
        assert (one["event_type"], one["payload"], one["id"]) == ("demo.one", {"n": 1}, first.id)
        assert (two["event_type"], two["target_agent"]) == ("demo.two", "someone")

        # A reconnecting client gets what it missed after its Last-Event-ID, then live events.
        headers = {"last-event-id": first.id}
        async with client.stream(
            "GET", "/events/stream", params={"event_type": "demo.*"}, headers=headers
        ) as stream:
            replayed = await next_event(stream.aiter_lines())
        assert replayed["event_type"] == "demo.two"

        async with client.stream("GET", "/events/stream", params={"replay": "2"}) as stream:
            lines = stream.aiter_lines()
            assert [(await next_event(lines))["event_type"] for _ in range(2)] == ["demo.one", "demo.two"]
