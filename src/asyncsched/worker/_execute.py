"""Executing claimed jobs: each in a task of its own, ``async def`` on the loop and ``def`` in the thread
pool (``_job.on_loop`` / ``_job.in_thread``), with its ``current_job()`` context, the worker's hooks and
RQ's callbacks; its outcome goes to the in-flight table (:class:`~._running.Running`)."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import _tracing
from .._redis.connection import create_sync_redis
from ..config import Settings
from ._context import ProgressReporter
from ._hooks import Hooks, run_hooked, shutdown, startup
from ._job import ClaimedJob, Prepared, after_run, execute, prepare, stopped
from ._rqjob import CurrentJob, set_current
from ._state import Shared

__all__ = ["Executor"]

log = logging.getLogger("asyncsched.worker")


class Executor:
    """Runs the jobs the claimer hands it (:meth:`dispatch`); owns the thread pool, the hooks' life
    (``on_startup`` / ``on_shutdown``) and the synchronous Redis client RQ callbacks get."""

    def __init__(self, w: Shared, url: str | None, hooks: Hooks | None) -> None:
        cfg = self.cfg = w.cfg
        self.running, self.redis, self.keys = w.running, w.redis, w.keys
        self._url = url  # the Redis URL when the worker made its own client (None: a given client)
        self.hooks = hooks
        self.around = hooks is not None and hooks.around_jobs  # checked once per job
        self.resources: dict[str, Any] = {}  # on_startup's shared resources (current_job().resources)
        self.pool = ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="asyncsched-job")
        self.reporter: ProgressReporter | None = None
        self._sync: Any = None  # the synchronous client RQ callbacks get (made on first use)
        self._sync_lock = threading.Lock()  # callbacks of concurrent jobs ask for it from several threads
        self._sync_closed = False
        self._hooks_up = False

    async def start_hooks(self) -> None:
        """``on_startup`` (once per entry); :class:`WorkerHookError` stops the worker before any job."""
        if not self._hooks_up:
            await startup(self.hooks, self.resources, self.pool, self.cfg.name)
            self._hooks_up = True

    async def stop_hooks(self) -> None:
        if self.reporter is not None:
            await self.reporter.aclose()
            self.reporter = None
        if self._hooks_up:
            self._hooks_up = False
            await shutdown(self.hooks, self.resources, self.pool, self.cfg.name)

    def open(self, settings: Settings) -> None:
        """Before the first job of a run: the progress reporter jobs share."""
        self.reporter = self.reporter or ProgressReporter(self.redis, settings, self.cfg.name)

    def close(self) -> None:
        """At the worker's exit: the pool (threads still running are not waited for) and the sync client."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self._sync_lock:
            self._sync_closed = True
            if self._sync is not None:
                self._sync.close()

    def dispatch(self, job: ClaimedJob) -> None:
        """Start a claimed job in a task (or hand a refused one's outcome straight on)."""
        cfg = self.cfg
        prep = prepare(
            job, accept_pickle=cfg.accept_pickle, default_timeout=cfg.job_timeout, allow=cfg.allowed_functions
        )
        prep.max_result_bytes = cfg.max_result_bytes
        if prep.outcome is not None:
            self.running.refused(job, prep.outcome)
            return
        task = asyncio.create_task(self._execute(job, prep), name=f"asyncsched-job-{job.id}")
        self.running.started(job, task)

    async def _execute(self, job: ClaimedJob, prep: Prepared) -> None:
        ctx = CurrentJob(
            job.id, job.queue, job.execution_id, job.attempt, self.cfg.name, job.hash, prep.fmt,
            self.sync_redis, resources=self.resources, reporter=self.reporter, load_hash=self.job_hash,
        )  # fmt: skip
        job.context = ctx
        set_current(ctx)  # this task's context: the job's function, its threads, its callbacks
        try:
            if self.around:
                assert self.hooks is not None
                run = run_hooked(self.hooks, job, prep, self.pool, ctx)
            else:
                run = execute(job, prep, self.pool)
            if _tracing.tracer is None:  # asyncsched/_tracing.py: a span around the run when on
                outcome = await run
            else:
                outcome = await _tracing.run_traced(job, prep.fmt, run)
            if job.features is not None:
                outcome = await after_run(job, outcome, self.pool, ctx)
        except asyncio.CancelledError:
            outcome = stopped(job)
        except BaseException:  # a bug of ours must not lose the job
            log.exception("job %s: internal error", job.id)
            outcome = stopped(job)
        self.running.returned(job, outcome)

    def job_hash(self, job_id: str) -> dict[str, bytes]:
        """The whole hash of job ``job_id`` (a job's ``current_job().hash``, read on first use)."""
        raw = self.sync_redis().hgetall(self.keys.job(job_id))
        return {k.decode(): v for k, v in raw.items()}

    def sync_redis(self) -> Any:
        """A synchronous client on this worker's Redis (RQ callbacks' ``connection``); thread-safe: one
        client however many threads ask at once (a second one made in a race would never be closed)."""
        if self._sync is None:
            with self._sync_lock:
                if self._sync_closed:  # a thread of a job abandoned at exit: a client made now would leak
                    raise RuntimeError("the worker has stopped: no Redis connection for this job any more")
                if self._sync is None:
                    self._sync = self._make_sync()
        return self._sync

    def _make_sync(self) -> Any:
        if self._url is not None:
            return create_sync_redis(self._url)
        # given a client: the same server, from its connection settings
        import redis as syncredis

        kwargs = self.redis.connection_pool.connection_kwargs
        if "server" in kwargs:  # fakeredis
            import fakeredis

            return fakeredis.FakeRedis(server=kwargs["server"])
        keep = ("host", "port", "db", "username", "password", "path")
        return syncredis.Redis(**{k: v for k, v in kwargs.items() if k in keep})
