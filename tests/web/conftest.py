"""Fixtures of the web tests: a running :class:`Runtime` (no HTTP) and an HTTP client on its router."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from asyncsched.config import Settings
from asyncsched.runtime import Runtime
from asyncsched.web import create_router

from ..servers import free_port as _free_port
from .procs import Process, clean_env

T = TypeVar("T")
PREFIX = "/api/scheduler"


def write_tasks(path: Path, every: str = "1 hour", name: str = "yaml_add") -> Path:
    path.write_text(
        textwrap.dedent(
            f"""
            tasks:
              - name: {name}
                description: loaded from YAML
                type: interval
                schedule: "{every}"
                function: "tests.web.webtasks:add"
                kwargs: {{a: 20, b: 22}}
            """
        )
    )
    return path


async def until(
    check: Callable[[], Awaitable[T | None]], runtime: Runtime | None = None, timeout: float = 60.0
) -> T:
    """Re-check ``check`` after every live event (or every 0.2 s) until it returns a truthy value."""

    async def loop() -> T:
        if runtime is None:
            while True:
                value = await check()
                if value:
                    return value
                await asyncio.sleep(0.1)
        async with runtime.live.subscribe() as events:
            while True:
                value = await check()
                if value:
                    return value
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(events.get(), 0.2)

    try:
        return await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"condition not met within {timeout}s: {check}") from None


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    """The parametrized backends, with the test tasks module allow-listed."""
    return settings.replace(allowed_functions=("tests.web.webtasks",), agent="web-tests")


@pytest.fixture
async def runtime(web_settings: Settings, tmp_path: Path) -> AsyncIterator[Runtime]:
    tasks = write_tasks(tmp_path / "tasks.yaml")
    async with Runtime(web_settings, tasks_files=[tasks], http=False) as rt:
        yield rt


def client_for(app: Any, prefix: str = PREFIX, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=f"http://localhost{prefix}",
        headers=headers,
        timeout=30,
    )


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    assert runtime.services is not None
    app = Starlette(routes=[Mount(PREFIX, create_router(runtime.services))])
    async with client_for(app) as c:
        yield c


class RuntimeThread:
    """A :class:`Runtime` serving HTTP from its own event loop in a background thread (for sync clients)."""

    def __init__(self, settings: Settings, tasks_files: list[Path]) -> None:
        import threading

        from ..servers import free_port

        self.settings = settings.replace(port=free_port())
        self.tasks_files = tasks_files
        self.url = f"http://127.0.0.1:{self.settings.port}{PREFIX}"
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runtime: Runtime | None = None
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), name="web-runtime", daemon=True
        )

    async def _main(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            async with Runtime(self.settings, tasks_files=self.tasks_files) as runtime:
                self._runtime = runtime
                self._ready.set()
                await runtime.wait()
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def __enter__(self) -> RuntimeThread:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None or self._runtime is None:
            raise RuntimeError(f"runtime did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._runtime is not None:
            self._loop.call_soon_threadsafe(self._runtime.request_stop)
        self._thread.join(60)
        assert not self._thread.is_alive(), "runtime did not stop"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory like a user's app: a task module and a tasks.yaml firing every second."""
    (tmp_path / "apptasks.py").write_text(
        textwrap.dedent(
            """
            async def tick(n: int = 1) -> dict:
                return {"ticked": n}


            def note(text: str = "hello") -> str:
                # The spec's pattern: a sync task publishing through the sync facade.
                from asyncsched.sync import EventBus

                EventBus().publish(event_type="app.noted", source_agent="app", payload={"text": text})
                return text
            """
        )
    )
    (tmp_path / "tasks.yaml").write_text(
        textwrap.dedent(
            """
            tasks:
              - name: ticker
                type: interval
                schedule: "1 second"
                function: "apptasks:tick"
                kwargs: {n: 7}
              - name: noter
                type: interval
                schedule: "1 second"
                function: "apptasks:note"
            """
        )
    )
    return tmp_path


@pytest.fixture
def run_process(project: Path) -> Iterator[tuple[Process, str]]:
    port = _free_port()
    args = [
        sys.executable,
        "-m",
        "asyncsched",
        "run",
        "--tasks",
        "tasks.yaml",
        "--port",
        str(port),
        "--for",
        "300",
    ]
    process = Process(args, project, clean_env())
    try:
        yield process, f"http://127.0.0.1:{port}/api/scheduler"
    finally:
        process.stop()
