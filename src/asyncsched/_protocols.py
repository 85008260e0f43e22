"""The seams between asyncsched's packages, named once (as APScheduler 4's ``abc.py``).

Each protocol says what one side needs of another, and each method's docstring the contract an
implementation keeps. The packages behind a seam are imported lazily (start-up cost, optional
extras); the protocols keep the calls across it checked by mypy all the same.

::

    scheduler ──RunQueue──────────▶ queue       the one call a scheduler makes: enqueue one run
    runtime, app lifespan ──StoppableWorker──▶ worker   drain running jobs on shutdown
    web, runtime ──EventSource────▶ events      the live feed of the dashboard and ``/events/stream``
    worker ──TracedJob, TracedOutcome──▶ _tracing   what a job's ``run`` span records

The web layer's engines (database, queue, scheduler, bus, repositories) are typed as the concrete
classes in :class:`asyncsched.web.Services`: it drives their whole API, so a protocol would only repeat it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .events import Event
    from .queue import RateLimit, Retry

__all__ = ["EventSource", "RunQueue", "StoppableWorker"]


class RunQueue(Protocol):
    """What the scheduler needs of a queue (:class:`asyncsched.queue.TaskQueue` is one)."""

    async def enqueue(
        self,
        func: str,
        *,
        function_path: str | None = None,
        job_id: str | None = None,
        unique: bool = False,
        agent_name: str | None = None,
        task_name: str | None = None,
        scheduled_task_id: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the job's, RQ's name)
        retry: Retry | int | None = None,
        delay: float | None = None,
        description: str | None = None,
        rate_limit: RateLimit | str | None = None,
        concurrency_key: str | None = None,
        max_concurrency: int | None = None,
    ) -> str:
        """Enqueue one run of ``func``; return its job id. With ``unique=True`` and a ``job_id`` that
        exists already, nothing is written and the existing id is returned: a scheduler that retries
        the enqueue of a claimed tick never runs it twice."""

    async def __aexit__(self, *exc: object) -> None:
        """Release the queue's connections (a queue the scheduler opened itself)."""


class StoppableWorker(Protocol):
    """What shutting a worker down needs of it (:class:`asyncsched.worker.Worker` is one)."""

    @property
    def grace_period(self) -> float:
        """Seconds running jobs get to finish once a stop was requested."""

    @property
    def running_jobs(self) -> Collection[str]:
        """The ids of the jobs running now (empty once drained)."""

    def request_stop(self) -> None:
        """Stop taking work; running jobs get ``grace_period``; ``run()`` returns once drained."""


class EventSource(Protocol):
    """What the live feed needs of an event bus (:class:`asyncsched.events.EventBus` is one)."""

    @property
    def started(self) -> bool:
        """Whether the bus is started and not closed (a feed reading it ends once it is not)."""

    def events(self, event_type: str = "*") -> AsyncIterator[Event]:
        """Every event received from now on whose type matches ``event_type``, until the bus closes."""
