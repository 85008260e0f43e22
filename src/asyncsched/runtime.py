"""The composition root of ``asyncsched run``: every component in one process, on one ``AsyncExitStack``.

::

    async with Runtime(settings, tasks_files=["tasks.yaml"]) as runtime:
        await runtime.wait()          # until runtime.request_stop() (Ctrl-C in the CLI) or a crash

Entered in order (and left in reverse): Redis check, ``Database`` (migrated), ``Recorder``, ``EventBus``
(monitor view, persisting events), ``LifecyclePublisher``, ``TaskQueue``, ``Worker`` (running),
``TaskScheduler`` (firing, with the tasks files registered), the live feed and run log, and the HTTP
server (uvicorn) serving :func:`asyncsched.web.create_app`. On the embedded defaults (``memory://``,
SQLite) nothing needs to be installed or configured; ``REDIS_URL`` / ``DATABASE_URL`` point the same
process at real servers.

One readable log line is written per fired task and per result (logger ``asyncsched.run``), from the
``task.*`` events of the bus.

The live feed, the worker and the scheduler run under :class:`asyncsched._supervise.Supervised`: should
one of them crash (or end while nobody asked it to), it is logged and restarted with backoff; the process
ends only when it is asked to stop (or the HTTP server cannot serve).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import uvicorn

from ._control import cancel_and_wait, stop_worker
from ._lifetime import Stacked
from ._metrics import ProcessMetrics
from ._redis import check_redis, create_redis, mask_url
from ._redis._durability import warn_if_redis_may_lose_data
from ._supervise import Supervised
from .config import Settings, get_settings
from .events import Event, EventBus, open_publisher, system_events
from .exceptions import ConfigurationError
from .queue import TaskQueue
from .scheduler import TaskScheduler
from .store import Database, ScheduledTask, open_recorder
from .web import Services, create_app
from .web._live import LiveFeed
from .web._services import MONITOR, pump
from .worker import Hooks, Worker

__all__ = ["Runtime", "cancel_and_wait", "stop_worker"]

log = logging.getLogger("asyncsched.run")

RESULT_PREVIEW = 120
"""Characters of a result shown in the run log."""


def add_import_path(path: str | os.PathLike[str] | None = None) -> None:
    """Put ``path`` (default the working directory) first on ``sys.path``, as ``rq worker`` does."""
    entry = os.path.abspath(path or os.getcwd())
    if entry not in sys.path:
        sys.path.insert(0, entry)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runtime owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _preview(value: Any) -> str:
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= RESULT_PREVIEW else text[: RESULT_PREVIEW - 1] + "…"


class RunLog:
    """Turns ``task.*`` events into one line each: what fired, and how each run ended."""

    def __init__(self, queue: TaskQueue | None = None) -> None:
        self.queue = queue
        self._results: set[asyncio.Task[None]] = set()

    def __call__(self, event: Event) -> None:
        event_type = event.event_type
        payload: Mapping[str, Any] = event.payload or {}
        name = payload.get("task_name") or payload.get("function") or "?"
        job = payload.get("job_id", "?")
        if event_type == "task.queued":
            verb = "fired " if payload.get("scheduled_task_id") else "queued"
            log.info(
                "%s %s (%s) job %s on %s", verb, name, payload.get("function"), job, payload.get("queue")
            )
        elif event_type == "task.completed":
            duration = payload.get("duration")
            took = f" in {duration:.3f}s" if isinstance(duration, int | float) else ""
            if self.queue is None:
                log.info("success %s job %s%s", name, job, took)
            else:
                task = asyncio.ensure_future(self._log_result(name, job, took))
                self._results.add(task)
                task.add_done_callback(self._results.discard)
        elif event_type == "task.failed":
            retry = " (will retry)" if payload.get("will_retry") else ""
            log.warning("failed  %s job %s: %s%s", name, job, payload.get("error"), retry)
        elif event_type == "task.cancelled":
            log.info("cancelled %s job %s", name, job)

    async def _log_result(self, name: str, job: str, took: str) -> None:
        assert self.queue is not None  # only called when there is one
        try:
            result = await asyncio.wait_for(self.queue.result(job), 5)
            log.info("success %s job %s%s -> %s", name, job, took, _preview(result))
        except Exception:
            log.info("success %s job %s%s", name, job, took)

    async def aclose(self) -> None:
        for task in list(self._results):
            task.cancel()
        await asyncio.gather(*self._results, return_exceptions=True)


class Runtime(Stacked):
    """Scheduler, worker, event bus, recorder and HTTP API in one process (an async context manager).

    ``tasks_files``: ``tasks.yaml`` files to register (default ``settings.tasks``); ``agent``: their agent
    (default ``settings.agent``); ``host``/``port``: the HTTP server (default the settings'); ``http``:
    serve HTTP at all; ``worker``: run a worker in this process, with ``worker_hooks`` (see ``Worker``).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        tasks_files: Sequence[str | os.PathLike[str]] | None = None,
        agent: str | None = None,
        host: str | None = None,
        port: int | None = None,
        http: bool = True,
        worker: bool = True,
        worker_hooks: Hooks | str | object | None = None,
    ) -> None:
        base = settings or get_settings()
        files = tuple(str(f) for f in tasks_files) if tasks_files is not None else None
        self.settings = base.replace(tasks=files, agent=agent, host=host, port=port)
        self.http = http
        self.run_worker = worker
        self.worker_hooks = worker_hooks  # Worker(hooks=...): a Hooks, an object or "module:object"
        self.services: Services | None = None
        self.live = LiveFeed()
        self.url: str | None = None
        self.tasks: list[ScheduledTask] = []
        self._stop = asyncio.Event()
        self._background: list[asyncio.Task[Any]] = []
        self._server: _Server | None = None
        self._worker: Worker | None = None

    # -- lifetime ----------------------------------------------------------------------------------

    async def __aexit__(self, *exc_info: object) -> None:
        if self._stack is not None:
            log.info("shutting down")
            await super().__aexit__(*exc_info)
            log.info("stopped")

    def request_stop(self) -> None:
        """Ask :meth:`wait` to return so the ``async with`` block can leave (graceful shutdown)."""
        self._stop.set()

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Until :meth:`request_stop`, ``timeout`` seconds, or a component crashing (its error is raised)."""
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            pending = {stop, *self._background}
            done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
                if task is not stop:
                    raise RuntimeError(f"{task.get_name()} stopped unexpectedly")
        finally:
            stop.cancel()

    def _supervise(
        self,
        stack: AsyncExitStack,
        run: Callable[[], Awaitable[Any]],
        name: str,
        done: Callable[[], bool] | None = None,
    ) -> asyncio.Task[Any]:
        """Run ``run()`` under a supervisor (restarted with backoff when it crashes or ends unless
        ``done()``); its supervising task is watched by :meth:`wait` and stopped with the stack."""
        supervised = Supervised(name, run, done=done or self._stop.is_set).start()
        task = supervised.task
        assert task is not None
        self._background.append(task)

        async def _stop() -> None:
            if task in self._background:
                self._background.remove(task)
            await supervised.stop()

        stack.push_async_callback(_stop)
        return task

    def _spawn(self, stack: AsyncExitStack, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._background.append(task)

        async def _cancel() -> None:
            if task in self._background:
                self._background.remove(task)
            await cancel_and_wait(task)

        stack.push_async_callback(_cancel)
        return task

    async def _start(self, stack: AsyncExitStack) -> None:
        s = self.settings
        add_import_path()
        redis = create_redis(s.redis_url)
        stack.push_async_callback(redis.aclose)
        await check_redis(redis, s.redis_url)
        await warn_if_redis_may_lose_data(redis, s, "asyncsched run")
        db = await stack.enter_async_context(Database(settings=s))
        await db.migrate()
        await stack.enter_async_context(open_recorder(redis, db=db, settings=s))
        bus = await stack.enter_async_context(EventBus(redis, settings=s, agent_name=MONITOR, persist=True))
        await stack.enter_async_context(open_publisher(redis, settings=s, bus=bus))
        await stack.enter_async_context(system_events(bus, "runtime", s.agent))
        queue = await stack.enter_async_context(TaskQueue(redis, settings=s))
        run_log = RunLog(queue)
        stack.push_async_callback(run_log.aclose)
        _ = self._supervise(
            stack, lambda: pump(bus, self.live.push, run_log), "asyncsched-live", lambda: not bus.started
        )
        metrics = ProcessMetrics()  # the worker's job histograms and the scheduler's tick lag, on /metrics
        if self.run_worker:
            worker = await stack.enter_async_context(Worker(redis=redis, settings=s, hooks=self.worker_hooks))
            worker.metrics = metrics
            self._worker = worker
            worker_task = self._supervise(stack, worker.run, "asyncsched-worker", worker._stop.is_set)

            async def _stop_worker() -> None:
                worker.request_stop()
                await stop_worker(worker, worker_task)

            stack.push_async_callback(_stop_worker)
        scheduler = await stack.enter_async_context(TaskScheduler(redis, settings=s, db=db, queue=queue))
        scheduler.metrics = metrics
        for path in s.tasks:
            registered = await scheduler.register_file(Path(path), agent_name=s.agent)
            self.tasks.extend(registered)
            log.info("loaded %d task(s) from %s for agent %s", len(registered), path, s.agent)
        # Fired from our own task (not fire=True) so shutdown can insist on cancelling it.
        _ = self._supervise(stack, scheduler.run, "asyncsched-scheduler")
        self.services = Services(
            s, redis=redis, db=db, queue=queue, scheduler=scheduler, bus=bus, live=self.live
        )
        self.services.process_metrics = metrics
        log.info("redis %s, database %s", mask_url(s.redis_url), db.url.render_as_string(hide_password=True))
        if self.http:
            await self._serve(stack)

    async def _serve(self, stack: AsyncExitStack) -> None:
        assert self.services is not None
        app = create_app(self.services)
        config = uvicorn.Config(
            app, host=self.settings.host, port=self.settings.port, lifespan="on", log_config=None,
            access_log=False,
        )  # fmt: skip
        server = _Server(config)
        self._server = server
        task = self._spawn(stack, server.serve(), "asyncsched-http")

        async def _stop_server() -> None:
            server.should_exit = True
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 10)

        stack.push_async_callback(_stop_server)
        where = f"{self.settings.host}:{self.settings.port}"
        while not server.started:  # uvicorn offers no startup event to await
            if task.done():
                with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind
                    task.result()
                raise ConfigurationError(
                    f"the HTTP server could not listen on {where} (in use?); set --port or ASYNCSCHED_PORT"
                )
            await asyncio.sleep(0.02)
        host = self.settings.host
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.settings.port}"
        log.info("dashboard %s/api/scheduler/dashboard  (API %s/api/scheduler/)", self.url, self.url)
