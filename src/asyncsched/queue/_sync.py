"""The sync ``TaskQueue``: the spec's calls for sync code, delegating to the async one via the portal."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis

from .._lifetime import Facade
from .._portal import portal
from ..config import Settings, get_settings
from ._limits import Limit, check_policies
from ._models import JobRecord, JobStatus, WorkerInfo
from ._queue import TaskQueue as AsyncTaskQueue

__all__ = ["TaskQueue"]


class TaskQueue(Facade[AsyncTaskQueue]):
    """Sync twin of :class:`asyncsched.queue.TaskQueue` (same arguments, same results).

    Works from plain sync code and from sync task functions running in a worker's threads. The async
    queue is created on the facade's private loop on first use. ``redis`` must be a URL here (a client is
    bound to the loop that created it).
    """

    def __init__(
        self,
        redis: str | None = None,
        *,
        settings: Settings | None = None,
        name: str = "default",
        serializer: str | None = None,
        limits: Mapping[str, Limit] | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self._limits = check_policies(limits)
        self._url = redis or self.settings.redis_url
        self._name = name
        self._serializer = serializer

    async def _open(self) -> AsyncTaskQueue:
        client: aioredis.Redis | str = self._url
        return AsyncTaskQueue(
            client, settings=self.settings, name=self._name, serializer=self._serializer, limits=self._limits
        )

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            return await getattr(await self._opened(), method)(*args, **kwargs)

        return portal().call(run)

    def enqueue(self, func: Callable[..., Any] | str | None = None, **options: Any) -> str:
        """Enqueue a job; see :meth:`asyncsched.queue.TaskQueue.enqueue`."""
        return str(self._call("enqueue", func, **options))

    def enqueue_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[str]:
        """Enqueue several jobs in one round trip."""
        return list(self._call("enqueue_many", list(jobs)))

    def status(self, job_id: str) -> JobStatus:
        """The job's state."""
        return JobStatus(self._call("status", job_id))

    def result(self, job_id: str, wait: float | None = None) -> Any:
        """The job's return value (``None`` if not finished within ``wait``)."""
        return self._call("result", job_id, wait)

    def job(self, job_id: str) -> JobRecord:
        """The full record of a job."""
        record: JobRecord = self._call("job", job_id)
        return record

    def cancel(self, job_id: str) -> bool:
        """Cancel a job."""
        return bool(self._call("cancel", job_id))

    def requeue(self, job_id: str) -> None:
        """Requeue a failed job."""
        self._call("requeue", job_id)

    def list_jobs(
        self, queue: str = "default", status: JobStatus | None = None, **options: Any
    ) -> list[JobRecord]:
        """Jobs of a queue in a state."""
        jobs: list[JobRecord] = self._call("list_jobs", queue, status, **options)
        return jobs

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """Queue name -> {state: count}."""
        counts: dict[str, dict[str, int]] = self._call("queue_counts")
        return counts

    def workers(self) -> list[WorkerInfo]:
        """Registered workers."""
        workers: list[WorkerInfo] = self._call("workers")
        return workers
