"""The worker: a small composition of parts with one job each (docs/architecture.md, "The worker").

=============  =====================================================================================
part           job
=============  =====================================================================================
``_loop``      the claim loop: claim for free slots, block when idle, burst exit
``_claim``     ``claim.lua`` (batched, or pipelined behind a blocking pop); replies into jobs
``_execute``   each job in a task: ``async def`` on the loop, ``def`` in threads; hooks, callbacks
``_running``   the in-flight table: slots, outcomes on their way, stop-job, the drain at shutdown
``_finish``    the completer: outcomes recorded in batches by ``finish.lua`` (typed records)
``_leases``    registration, heartbeats (lease renewal) and the reaper
``_promote``   scheduled jobs and jobs parked by a rate limit, moved to their queue when due
``_commands``  RQ's control channel: shutdown, stop-job, stop-execution, kill-horse; wake-ups
=============  =====================================================================================

Every background loop runs under the one supervisor (``asyncsched._supervise``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import redis.asyncio as aioredis

from .. import _tracing
from .._redis import create_redis
from .._supervise import Supervised, stop_all
from ..config import Settings, get_settings
from ..rq._scripts import Scripts
from ._arq import ArqConsumer, arq_functions
from ._claim import Claimer
from ._cluster import ClusterClaimer, ClusterCompleter, ClusterLeases, ClusterPromoter
from ._commands import Commands
from ._execute import Executor
from ._finish import Completer
from ._hooks import Hooks
from ._leases import Leases
from ._loop import ClaimLoop
from ._promote import Promoter
from ._rqhook import install_rq_current_job
from ._running import Running
from ._settings import ORPHAN_POLICIES, WorkerSettings, merge_hooks
from ._state import Shared

__all__ = ["ORPHAN_POLICIES", "Worker", "WorkerOptions", "WorkerSettings"]

if TYPE_CHECKING:
    from .._metrics import ProcessMetrics

log = logging.getLogger("asyncsched.worker")


class WorkerOptions(TypedDict, total=False):
    """``Worker``'s tuning keywords (the fields of :class:`WorkerSettings` a caller may give)."""

    concurrency: int | None
    threads: int | None
    burst: bool
    accept_pickle: bool | None
    allowed_functions: Iterable[str] | None
    name: str | None
    heartbeat_interval: float
    lease: float
    orphan_policy: str
    grace_period: float
    batch_size: int
    scheduler_interval: float
    poll_timeout: float
    reap_interval: float


class Worker:
    """Runs jobs from RQ-format queues. ``async with Worker(...) as w: await w.run()``.

    * ``concurrency``: jobs in flight (async jobs run concurrently on the loop);
      ``threads``: pool for ``def`` jobs. Defaults from settings.
    * ``burst``: return from :meth:`run` once the queues are empty, nothing runs and no job of its queues
      waits for a flow limit (docs/flow-control.md).
    * ``accept_pickle``: run pickled (RQ-default) jobs; otherwise they fail without being unpickled.
    * ``allowed_functions``: an allow-list (as ``ASYNCSCHED_ALLOWED_FUNCTIONS``) for the functions jobs may
      name; other jobs fail without their module being imported. ``None``: every function defined in the
      module it is named by (``docs/security.md``).
    * ``heartbeat_interval``/``lease``: running jobs' ``<p>:wip:<q>`` scores are renewed every
      ``heartbeat_interval`` seconds to now + ``lease``; a job whose lease lapses (its worker died) is
      recovered by any worker's reaper per ``orphan_policy`` (``fail`` by default, like RQ; ``requeue``).
    * ``grace_period``: on stop, how long running jobs may finish before they are put back on their queue.
    * ``on_startup``/``on_shutdown``/``before_job``/``after_job``: worker hooks, or ``hooks`` (a
      :class:`~asyncsched.worker.Hooks`, an object with those attributes, or a ``"module:object"``
      reference); see :mod:`asyncsched.worker._hooks`. ``resources``: the dict ``on_startup`` fills,
      shared with every job as ``current_job().resources``. They run around ``arq`` jobs too.

    The tuning keywords (:class:`WorkerOptions`) become one :class:`WorkerSettings` (``config``), which
    may also be given whole.
    """

    def __init__(
        self,
        queues: Iterable[str] | None = None,
        *,
        redis: str | aioredis.Redis | None = None,
        settings: Settings | None = None,
        config: WorkerSettings | None = None,
        arq: Mapping[str, Any] | Iterable[Any] | str | None = None,
        arq_serializer: str = "pickle",
        hooks: Hooks | str | object | None = None,
        on_startup: Callable[..., Any] | None = None,
        on_shutdown: Callable[..., Any] | None = None,
        before_job: Callable[..., Any] | None = None,
        after_job: Callable[..., Any] | None = None,
        **options: Unpack[WorkerOptions],
    ) -> None:
        self.settings = settings or get_settings()
        _tracing.configure(self.settings)
        if config is not None and (options or queues is not None):
            raise TypeError("Worker: give config= or queues and tuning keywords, not both")
        self.cfg = config or WorkerSettings.resolve(self.settings, queues, **options)
        self.cfg.check()
        if redis is None or isinstance(redis, str):
            made = redis or self.settings.redis_url
            self.redis, self._owns, url = create_redis(made), True, made
        else:
            self.redis, self._owns, url = redis, False, None
        self._scripts = Scripts(self.redis)
        running = Running(self.cfg.concurrency, self.cfg.threads)
        self._shared = Shared(self.cfg, self.redis, self._scripts, running)
        self.cfg = self._shared.cfg  # on a cluster, with the queues' names in Redis
        self.keys, self._signals, self.running = self._shared.keys, self._shared.signals, running
        self._stop = self._signals.stop  # set by request_stop (runtime and the CLI watch it)
        self._entered = False
        self._background: list[Supervised] = []
        hooks_ = merge_hooks(hooks, on_startup, on_shutdown, before_job, after_job)
        self._build(url, hooks_)
        self._arq = self._arq_consumer(arq, arq_serializer)

    def _build(self, url: str | None, hooks: Hooks | None) -> None:
        """The parts, wired to each other."""
        w = self._shared
        self.executor = Executor(w, url, hooks)
        if w.cluster:  # one script call per queue (hash slot): _cluster.py
            self.claimer: Claimer = ClusterClaimer(w, self.executor.dispatch)
            self.completer: Completer = ClusterCompleter(w)
            self.promoter: Promoter = ClusterPromoter(w)
            self.leases: Leases = ClusterLeases(w, pipelined=lambda: False)
        else:
            self.claimer = Claimer(w, self.executor.dispatch)
            self.completer = Completer(w)
            self.promoter = Promoter(w)
            self.leases = Leases(w, pipelined=lambda: self.claimer.pipelined)
        self.commands = Commands(w, self.promoter, self.request_stop)
        self.loop = ClaimLoop(w, self.claimer, self.promoter.promote_once)

    def _arq_consumer(
        self, arq: Mapping[str, Any] | Iterable[Any] | str | None, serializer: str
    ) -> ArqConsumer | None:
        """Jobs of arq producers too (asyncsched[arq]; see _arq.py), with this worker's hooks."""
        if arq is None:
            return None
        ex = self.executor
        return ArqConsumer(
            self.redis,
            arq_functions(arq),
            accept_pickle=self.cfg.accept_pickle,
            serializer=serializer,
            concurrency=self.cfg.concurrency,
            job_timeout=float(self.cfg.job_timeout),
            hooks=ex.hooks,
            resources=ex.resources,
            executor=ex.pool,
            worker_name=self.cfg.name,
        )

    # ------------------------------------------------------------------ what callers read
    name = property(lambda self: self.cfg.name, doc="The worker's name (RQ's worker hash is named after it).")
    queues = property(lambda self: list(self.cfg.queues), doc="The queues it takes jobs from, in order.")
    burst = property(lambda self: self.cfg.burst, doc="Whether :meth:`run` returns once nothing is left.")
    grace_period = property(lambda self: self.cfg.grace_period, doc="Seconds running jobs get at a stop.")
    concurrency = property(lambda self: self.cfg.concurrency, doc="Jobs in flight at most.")
    threads = property(lambda self: self.cfg.threads, doc="Threads for ``def`` jobs.")
    hooks = property(lambda self: self.executor.hooks, doc="The worker's hooks (``None``: none).")
    resources = property(lambda self: self.executor.resources, doc="What ``on_startup`` set up for jobs.")

    @property
    def processed(self) -> int:
        """Jobs whose outcome this worker recorded (arq jobs included)."""
        return self.completer.processed + (self._arq.processed if self._arq is not None else 0)

    @property
    def metrics(self) -> ProcessMetrics | None:
        """``asyncsched._metrics``: observes each recorded batch of outcomes."""
        return self.completer.metrics

    @metrics.setter
    def metrics(self, value: ProcessMetrics | None) -> None:
        self.completer.metrics = value

    @property
    def running_jobs(self) -> list[str]:
        """Ids of the jobs running now."""
        return list(self.running.jobs)

    async def reap(self) -> list[tuple[str, str]]:
        """Recover jobs whose worker died (lease lapsed) on this worker's queues; returns (id, action)."""
        return await self.leases.reap()

    def request_stop(self) -> None:
        """Stop taking work; running jobs get ``grace_period`` to finish, the rest is put back."""
        self._stop.set()
        self.running.slot.set()

    # ------------------------------------------------------------------ lifetime
    async def __aenter__(self) -> Worker:
        await self.executor.start_hooks()
        try:
            await self.leases.register_birth()
        except BaseException:
            await self.executor.stop_hooks()
            raise
        self._entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.leases.register_death()
        finally:
            await self.executor.stop_hooks()
            self.executor.close()
            if self._owns:
                await self.redis.aclose()

    async def run(self) -> None:
        """Process jobs until :meth:`request_stop` (or, in burst mode, until the queues are empty)."""
        await self.executor.start_hooks()
        if not self.leases.registered:
            await self.leases.register_birth()
        self.executor.open(self.settings)
        install_rq_current_job()  # rq.get_current_job() sees our jobs (when rq is installed)
        self._signals.closing.clear()
        closing = self._signals.closing.is_set
        self._background = [  # restarted, with backoff, should one of them end or crash
            Supervised(name, loop, done=closing).start()
            for name, loop in (
                ("asyncsched-completer", self.completer.run),
                ("asyncsched-heartbeat", self.leases.run),
                ("asyncsched-promoter", self.promoter.run),
                ("asyncsched-control", self.commands.run),
            )
        ]
        log.info("worker %s listening on %s", self.name, ", ".join(self.cfg.queues))
        try:
            # as RQ's worker: subscribed to its command channel before the first job, so that a stop-job
            # command for a job it started is never missed (bounded: Redis may be down at start)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self.commands.listening.wait()
            await self._work()
        finally:
            await self._wind_down()

    async def _work(self) -> None:
        """The claim loop, with arq's consumer beside it when arq jobs are taken too (supervised: a crash
        is logged and the arq loop restarted with backoff)."""
        arq = self._arq
        if arq is None:
            await self.loop.run()
            return
        burst, stop = self.cfg.burst, self._stop
        runner = Supervised(
            "asyncsched-arq", lambda: arq.run(stop, burst=burst), done=lambda: burst or stop.is_set()
        ).start()
        try:
            await self.loop.run()
        finally:
            if not burst:
                stop.set()
            assert runner.task is not None
            await runner.task

    async def _wind_down(self) -> None:
        """Drain running jobs, stop the background loops, release locks; unregister when not entered."""
        await self.claimer.aclose()
        await self.running.drain(self.cfg.grace_period if self._stop.is_set() else 0)
        # The loops also watch ``closing``: a cancellation swallowed inside a client call (seen with
        # redis-py) must not keep a loop alive, so each is cancelled until it is done.
        self._signals.closing.set()
        await stop_all(self._background)
        self._background = []
        await self.promoter.release_locks()
        if not self._entered:  # used without ``async with``: leave nothing registered
            with contextlib.suppress(Exception):
                await self.leases.register_death()
            await self.executor.stop_hooks()
        log.info("worker %s stopped after %d jobs", self.name, self.processed)
