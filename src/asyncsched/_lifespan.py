"""``asyncsched.lifespan``: the control plane (and optionally a worker) run by a Starlette/FastAPI app.

A composition root like :mod:`asyncsched.runtime`: it enters a :class:`~asyncsched._control.ControlPlane`
and, with ``worker=True``, a :class:`~asyncsched.worker.Worker` on one ``AsyncExitStack``; the control
plane itself knows nothing of workers.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, overload

import redis.asyncio as aioredis

from ._control import ControlPlane, stop_worker
from ._supervise import Supervised
from .config import Settings, get_settings

__all__ = ["LifespanFactory", "lifespan"]


LifespanFactory = Callable[[Any], AbstractAsyncContextManager[None]]


@overload
def lifespan(app: object, /) -> AbstractAsyncContextManager[None]: ...


@overload
def lifespan(
    *,
    settings: Settings | None = ...,
    tasks: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = ...,
    agent: str | None = ...,
    scheduler: bool = ...,
    history: bool = ...,
    events: bool = ...,
    worker: bool = ...,
) -> LifespanFactory: ...


def lifespan(
    app: object = None,
    /,
    *,
    settings: Settings | None = None,
    tasks: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    agent: str | None = None,
    scheduler: bool = True,
    history: bool = True,
    events: bool = True,
    worker: bool = False,
) -> AbstractAsyncContextManager[None] | LifespanFactory:
    """A Starlette/FastAPI lifespan running the control plane (and with ``worker=True`` a worker) in the app.

    ``FastAPI(lifespan=asyncsched.lifespan)`` uses the defaults; ``lifespan(tasks=..., agent=...)``
    returns a lifespan with options. Inside your own lifespan: ``async with asyncsched.lifespan(app):``.
    ``tasks``: ``tasks.yaml`` file(s) to register on startup (default: ``settings.tasks``).
    """
    plan = _Plan(settings, tasks, agent, scheduler, history, events, worker)
    if app is not None:
        return _run(plan)

    def factory(app: Any) -> AbstractAsyncContextManager[None]:
        return _run(plan)

    return factory


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a lifespan runs: the arguments of :func:`lifespan`."""

    settings: Settings | None
    tasks: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None
    agent: str | None
    scheduler: bool
    history: bool
    events: bool
    worker: bool


@asynccontextmanager
async def _run(plan: _Plan) -> AsyncIterator[None]:
    settings, tasks = plan.settings, plan.tasks
    s = settings or get_settings()
    if tasks is None:
        files: list[str | os.PathLike[str]] = list(s.tasks)
    elif isinstance(tasks, str | os.PathLike):
        files = [tasks]
    else:
        files = list(tasks)
    from ._redis import check_redis, create_redis

    redis = create_redis(s.redis_url)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(redis.aclose)
        await check_redis(redis, s.redis_url)  # unreachable: one BackendUnavailable line naming host and port
        await stack.enter_async_context(
            ControlPlane(
                redis,
                settings=s,
                scheduler=plan.scheduler,
                history=plan.history,
                events=plan.events,
                tasks=files,
                agent=plan.agent,
                component="app",
            )
        )
        if plan.worker:
            await _enter_worker(stack, redis, s)
        yield


async def _enter_worker(stack: AsyncExitStack, redis: aioredis.Redis, settings: Settings) -> None:
    from .worker import Worker

    instance = await stack.enter_async_context(Worker(redis=redis, settings=settings))
    runner = Supervised("asyncsched-app-worker", instance.run, done=instance._stop.is_set).start()
    task = runner.task
    assert task is not None

    async def _stop() -> None:
        instance.request_stop()
        await stop_worker(instance, task)

    stack.push_async_callback(_stop)
