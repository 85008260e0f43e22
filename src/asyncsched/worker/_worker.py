"""The worker: claims jobs in batches, runs ``async def`` on the loop and ``def`` in threads, records
outcomes in batches, keeps RQ's bookkeeping (registration, heartbeats, wip leases) current."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import _tracing
from .._keys import claiming_list, claiming_registry, lifecycle_stream, paused_queue, scheduled_wake
from .._redis import create_redis
from .._redis.connection import Line, create_sync_redis
from .._supervise import Supervised
from .._version import __version__
from ..config import Settings, get_settings
from ..events._poison import report_malformed
from ..exceptions import ConfigurationError
from ..rq import codec
from ..rq._scripts import Scripts
from ..rq.keys import RQKeys
from ._arq import ArqConsumer, arq_functions
from ._context import ProgressReporter
from ._guard import QueueBackoff, parse_command
from ._hooks import HOOK_NAMES, Hooks, hooks_from, load_hooks, run_hooked, shutdown, startup
from ._job import ClaimedJob, Outcome, Prepared, after_run, execute, prepare, put_back, result_type, stopped
from ._limits import LimitWaker
from ._rqjob import CurrentJob, install_rq_current_job, set_current

__all__ = ["ORPHAN_POLICIES", "Worker"]

if TYPE_CHECKING:
    from .._metrics import ProcessMetrics

log = logging.getLogger("asyncsched.worker")

ORPHAN_POLICIES = ("fail", "requeue")
_FINISH_FIELDS = 29
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
_SEP = "\x1e"


def _default_name() -> str:
    return f"asyncsched-{socket.gethostname().split('.')[0]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """Runs jobs from RQ-format queues. ``async with Worker(...) as w: await w.run()``.

    * ``concurrency``: jobs in flight (async jobs run concurrently on the loop);
      ``threads``: pool for ``def`` jobs. Defaults from settings.
    * ``burst``: return from :meth:`run` once the queues are empty and nothing runs.
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
      shared with every job as ``current_job().resources``.
    """

    def __init__(
        self,
        queues: Iterable[str] | None = None,
        *,
        redis: str | aioredis.Redis | None = None,
        settings: Settings | None = None,
        concurrency: int | None = None,
        threads: int | None = None,
        burst: bool = False,
        accept_pickle: bool | None = None,
        allowed_functions: Iterable[str] | None = None,
        name: str | None = None,
        heartbeat_interval: float = 10.0,
        lease: int = 60,
        orphan_policy: str = "fail",
        grace_period: float = 30.0,
        batch_size: int = 50,
        scheduler_interval: float = 1.0,
        poll_timeout: float = 1.0,
        reap_interval: float = 30.0,
        arq: Mapping[str, Any] | Iterable[Any] | str | None = None,
        arq_serializer: str = "pickle",
        hooks: Hooks | str | object | None = None,
        on_startup: Callable[..., Any] | None = None,
        on_shutdown: Callable[..., Any] | None = None,
        before_job: Callable[..., Any] | None = None,
        after_job: Callable[..., Any] | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        _tracing.configure(self.settings)
        self.queues = list(queues or self.settings.queues)
        if not self.queues:
            raise ConfigurationError("a worker needs at least one queue")
        if orphan_policy not in ORPHAN_POLICIES:
            raise ConfigurationError(f"orphan_policy must be one of {ORPHAN_POLICIES}, got {orphan_policy!r}")
        if lease <= heartbeat_interval:
            raise ConfigurationError(f"lease ({lease}s) must be longer than heartbeat_interval")
        if redis is None or isinstance(redis, str):
            self._url: str | None = redis or self.settings.redis_url
            self.redis = create_redis(self._url)
            self._owns = True
        else:
            self.redis, self._owns, self._url = redis, False, None
        self._sync: Any = None  # the synchronous client RQ callbacks get (made on first use)
        self._suspended = False  # RQ's suspension key was seen by the last claim
        self._listening = asyncio.Event()  # subscribed to RQ's command channel
        self._r: Any = self.redis
        self.concurrency = concurrency or self.settings.concurrency
        self.threads = threads or self.settings.threads
        self.burst = burst
        self.accept_pickle = self.settings.accept_pickle if accept_pickle is None else accept_pickle
        self.allowed_functions = None if allowed_functions is None else tuple(allowed_functions)
        self.name = name or _default_name()
        self.heartbeat_interval = heartbeat_interval
        self.lease = int(lease)
        self.orphan_policy = orphan_policy
        self.grace_period = grace_period
        self.batch_size = batch_size
        self.scheduler_interval = scheduler_interval
        self.poll_timeout = poll_timeout
        self.reap_interval = reap_interval
        # jobs of arq producers too (asyncsched[arq]; see _arq.py): arq's function names -> functions
        self._arq: ArqConsumer | None = None
        if arq is not None:
            self._arq = ArqConsumer(
                self.redis,
                arq_functions(arq),
                accept_pickle=self.accept_pickle,
                serializer=arq_serializer,
                concurrency=self.concurrency,
                job_timeout=float(self.settings.job_timeout),
            )
        self.keys = RQKeys(self.settings.key_prefix)
        self.prefix = self.settings.key_prefix
        self.stream = lifecycle_stream(self.prefix)
        self._scripts = Scripts(self.redis)
        # the claim loop's own connection (real Redis only; see Line). With one queue, an idle worker
        # BLMOVEs into its own claiming list with the claim script pipelined behind it.
        self._line = Line(self.redis) if Line.supported(self.redis) else None
        self._pipelined = len(self.queues) == 1 and self._line is not None
        self._claiming = claiming_list(self.prefix, self.name)
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="asyncsched-job")
        # claimed and not yet recorded (running, or finished with the outcome on its way to Redis)
        self._running: dict[str, tuple[ClaimedJob, asyncio.Task[None] | None]] = {}
        self._executing = 0  # of which still running (a slot frees when its function returns)
        self._sync_running = 0
        self._sync_seen = False
        self._done: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._closing = asyncio.Event()
        self._slot = asyncio.Event()
        self._registered = False
        self._entered = False
        self._background: list[Supervised] = []
        self._skips_reported: set[str] = set()
        self._paused = QueueBackoff(self.name)
        self.processed = 0
        self._outage = False
        self._next_due = -1  # earliest scheduled run-at seen by the last promotion (epoch ms)
        self._promote_at = 0.0  # when the promoter wakes next (epoch s); an earlier job wakes it sooner
        self._promote_now = asyncio.Event()
        self._limits = LimitWaker()  # when jobs parked by a rate limit may go (flow limits)
        self._exec_base = os.urandom(10).hex()
        self._exec_seq = 0  # the next execution number: ids are base + %012x, made by the claim script
        self.metrics: ProcessMetrics | None = None  # asyncsched._metrics: observes each recorded batch
        self.hooks = _hooks(hooks, on_startup, on_shutdown, before_job, after_job)
        self._around = self.hooks is not None and self.hooks.around_jobs  # checked once per job
        self.resources: dict[str, Any] = {}  # on_startup's shared resources (current_job().resources)
        self._hooks_up = False
        self._reporter: ProgressReporter | None = None

    # ------------------------------------------------------------------ lifetime
    async def __aenter__(self) -> Worker:
        await self._start_hooks()
        try:
            await self._register_birth()
        except BaseException:
            await self._stop_hooks()
            raise
        self._entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._register_death()
        finally:
            await self._stop_hooks()
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self._sync is not None:
                self._sync.close()
            if self._owns:
                await self.redis.aclose()

    async def _start_hooks(self) -> None:
        """``on_startup`` (once per entry); :class:`WorkerHookError` stops the worker before any job."""
        if not self._hooks_up:
            await startup(self.hooks, self.resources, self._pool, self.name)
            self._hooks_up = True

    async def _stop_hooks(self) -> None:
        if self._reporter is not None:
            await self._reporter.aclose()
            self._reporter = None
        if self._hooks_up:
            self._hooks_up = False
            await shutdown(self.hooks, self.resources, self._pool, self.name)

    def request_stop(self) -> None:
        """Stop taking work; running jobs get ``grace_period`` to finish, the rest is put back."""
        self._stop.set()
        self._slot.set()

    @property
    def running_jobs(self) -> list[str]:
        """Ids of the jobs running now."""
        return list(self._running)

    async def run(self) -> None:
        """Process jobs until :meth:`request_stop` (or, in burst mode, until the queues are empty)."""
        await self._start_hooks()
        if not self._registered:
            await self._register_birth()
        self._reporter = self._reporter or ProgressReporter(self.redis, self.settings, self.name)
        install_rq_current_job()  # rq.get_current_job() sees our jobs (when rq is installed)
        self._closing.clear()
        closing = self._closing.is_set
        self._background = [  # restarted, with backoff, should one of them end or crash
            Supervised(name, loop, done=closing).start()
            for name, loop in (
                ("asyncsched-completer", self._completer),
                ("asyncsched-heartbeat", self._maintenance),
                ("asyncsched-promoter", self._promoter),
                ("asyncsched-control", self._control),
            )
        ]
        log.info("worker %s listening on %s", self.name, ", ".join(self.queues))
        try:
            # as RQ's worker: subscribed to its command channel before the first job, so that a stop-job
            # command for a job it started is never missed (bounded: Redis may be down at start)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._listening.wait()
            arq = self._arq
            arq_runner = None
            if arq is not None:  # supervised: a crash is logged and the arq loop restarted with backoff
                arq_runner = Supervised(
                    "asyncsched-arq",
                    lambda: arq.run(self._stop, burst=self.burst),
                    done=lambda: self.burst or self._stop.is_set(),
                ).start()
            try:
                await self._work()
            finally:
                if arq is not None and arq_runner is not None and arq_runner.task is not None:
                    if not self.burst:
                        self._stop.set()
                    await arq_runner.task
                    self.processed += arq.processed
        finally:
            if self._line is not None:
                with contextlib.suppress(Exception):
                    await self._line.aclose()
            await self._drain()
            await self._stop_background()
            with contextlib.suppress(Exception):
                await self._scripts.run(
                    "release_locks", [self.prefix, self.name, len(self.queues), *self.queues]
                )
            if not self._entered:  # used without ``async with``: leave nothing registered
                with contextlib.suppress(Exception):
                    await self._register_death()
                await self._stop_hooks()
            log.info("worker %s stopped after %d jobs", self.name, self.processed)

    async def _stop_background(self) -> None:
        # The loops also watch ``_closing``: a cancellation swallowed inside a client call (seen with
        # redis-py) must not keep a loop alive, so cancel, wait, and cancel again if needed.
        self._closing.set()
        stops = {asyncio.ensure_future(s.stop()) for s in self._background}
        if stops:
            _, pending = await asyncio.wait(stops, timeout=6.0)
            if pending:
                log.warning("worker %s: %d background task(s) did not stop", self.name, len(pending))
                for stop in pending:
                    stop.cancel()
        self._background = []

    # ------------------------------------------------------------------ registration
    async def _register_birth(self) -> None:
        key = self.keys.worker(self.name)
        if await self._r.exists(key) and not await self._r.hexists(key, "death"):
            raise ConfigurationError(f"there exists an active worker named {self.name!r} already")
        now = codec.fmt_ts()
        mapping = {
            "birth": now,
            "last_heartbeat": now,
            "queues": ",".join(self.queues),
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "ip_address": "",
            "version": f"asyncsched-{__version__}",
            "python_version": sys.version,
            "state": "idle",
            "successful_job_count": 0,
            "failed_job_count": 0,
            "total_working_time": 0,
            "asyncsched": platform.python_implementation(),
        }
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=mapping)
            pipe.sadd(self.keys.workers, key)
            for q in self.queues:
                pipe.sadd(self.keys.workers_of(q), key)
            pipe.expire(key, self.lease + 60)
            if self._pipelined:
                pipe.hset(claiming_registry(self.prefix), self.name, self.queues[0])
            await pipe.execute()
        self._registered = True

    async def _register_death(self) -> None:
        if not self._registered:
            return
        key = self.keys.worker(self.name)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.srem(self.keys.workers, key)
            for q in self.queues:
                pipe.srem(self.keys.workers_of(q), key)
            pipe.hset(key, "death", codec.fmt_ts())
            pipe.expire(key, 60)
            pipe.delete(self.keys.worker_executions(self.name))
            await pipe.execute()
        self._registered = False
        if self._pipelined:  # anything left in our claiming list goes back to its queue
            with contextlib.suppress(*_REDIS_DOWN):
                await self.reap()

    # ------------------------------------------------------------------ the hot path
    def _capacity(self) -> int:
        # A slot frees as soon as a job returns, so the next claim overlaps the recording of the last
        # outcomes; at most ``concurrency`` outcomes wait to be recorded.
        free = min(self.concurrency - self._executing, 2 * self.concurrency - len(self._running))
        if self._sync_seen:
            free = min(free, self.threads - self._sync_running)
        return max(free, 0)

    async def _wait_slot(self, limit: float | None = None) -> None:
        self._slot.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await self._slot.wait()

    async def _work(self) -> None:
        """The claim loop; survives Redis outages (backs off and retries until Redis answers again) and
        any error reply (logged; the queue concerned, or the whole loop, backs off). Only a stop ends it."""
        backoff = 0.1
        refused = 0.0
        while not self._stop.is_set():
            try:
                if await self._work_once():
                    return
                backoff = 0.1
                refused = 0.0
                self._redis_up()
            except _REDIS_DOWN as exc:
                self._redis_down(exc)
                await self._pause(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:  # an error reply (or a bug of ours): log it, pause, go on
                refused = min(refused * 2, 60.0) if refused else 1.0
                log.error(
                    "worker %s: claiming failed (%s: %s); retrying in %.0fs",
                    self.name,
                    type(exc).__name__,
                    exc,
                    refused,
                    exc_info=not isinstance(exc, RedisError),
                )
                await self._pause(refused)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` unless a stop is requested."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _work_once(self) -> bool:
        """One step of the claim loop; ``True`` when a burst worker is done."""
        if self._suspended:
            return await self._while_suspended()
        n = min(self._capacity(), self.batch_size)
        if n <= 0:
            await self._wait_slot()
            return False
        if self._sync_running > 0 and n < self.threads // 2:
            # Sync jobs are claimed only for free threads (a claimed job is "started" for RQ). With few
            # threads free, a moment's wait lets more of them free up, so one claim round trip fetches a
            # batch instead of one or two jobs. Bounded: at most 2 ms before claiming what is free.
            deadline = time.monotonic() + 0.002
            while n < self.threads // 2 and (left := deadline - time.monotonic()) > 0:
                await self._wait_slot(left)
                n = min(self._capacity(), self.batch_size)
        if not self._paused.active(self.queues):  # every queue paused after error replies
            if self.burst and not self._running and self._done.empty():
                return True
            await self._pause(max(self._paused.next_resume(), 0.05))
            return False
        if await self._claim(n):
            return False
        if not self.burst:
            if await self._block(n):
                await asyncio.sleep(0)  # a worker woken from idle starts its jobs before its next command
            return False
        if await self._promote_once():
            return False
        if self._limits.waiting():  # jobs parked by a rate limit: wait for their start, then claim them
            await self._limits.nap(self.poll_timeout, self._stop)
            return False
        if not self._running and self._done.empty():
            return bool(await self._queues_empty())
        await self._wait_slot(self.poll_timeout)
        return False

    async def _while_suspended(self) -> bool:
        """Suspended (RQ's ``<p>:suspended`` key): claim nothing; check again each second (as RQ's worker),
        and say so in the worker hash. A burst worker stops, as RQ's does; running jobs finish."""
        if self.burst:
            log.warning("worker %s: suspended in burst mode, exiting", self.name)
            return True
        if await self._r.exists(self.keys.suspended):
            with contextlib.suppress(RedisError):
                await self._r.hset(self.keys.worker(self.name), "state", "suspended")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._stop.wait()
            return False
        self._suspended = False
        with contextlib.suppress(RedisError):
            await self._r.hset(self.keys.worker(self.name), "state", "idle")
        log.warning("worker %s: resumed", self.name)
        return False

    async def _queues_empty(self) -> bool:
        """Nothing to claim: every queue empty, paused by an operator, or backed off after errors."""
        queues = self._paused.active(self.queues)
        async with self._r.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.llen(self.keys.queue(q))
                pipe.exists(paused_queue(self.prefix, q))
            replies = await pipe.execute(raise_on_error=False)
        lengths, paused = replies[::2], replies[1::2]
        for q, length in zip(queues, lengths, strict=True):
            if isinstance(length, Exception):
                self._paused.failed(q, length)
        return not any(
            n for n, off in zip(lengths, paused, strict=True) if not isinstance(n, Exception) and off == 0
        )

    async def _unpaused(self, queues: list[str]) -> list[str]:
        """Those of ``queues`` no operator paused (``TaskQueue.pause``), checked before blocking: a blocking
        pop would take a paused queue's job, which the claim script then puts back."""
        if not queues:
            return []
        flags = await self._r.mget([paused_queue(self.prefix, q) for q in queues])
        return [q for q, flag in zip(queues, flags, strict=True) if flag is None]

    async def _block(self, n: int) -> int:
        """Wait (without polling) for a job to be pushed, then claim it and up to ``n - 1`` more.

        With one queue on a real Redis, the claim script is pipelined right behind a BLMOVE into this
        worker's own claiming list, so the job is started in the same round trip that delivers it. The
        claim cannot be abandoned half way: if this task is cancelled meanwhile, the replies are still
        read (``Line.collect``) and what it claimed is taken (at shutdown, put back like any running job).
        """
        timeout = max(1, round(self.poll_timeout))
        queues = await self._unpaused(self._paused.active(self.queues))
        if not queues:  # all paused: look again after the poll timeout (or at stop)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_timeout):
                    await self._stop.wait()
            return 0
        if self._pipelined:
            assert self._line is not None
            q = self.queues[0]
            args = self._claim_args(n, [], q, self._claiming, now_from_redis=True)
            blmove = ("BLMOVE", self.keys.queue(q), self._claiming, "LEFT", "RIGHT", timeout)
            claim = self._scripts.command("claim", args)
            try:
                moved, reply = await self._line.execute(blmove, claim, blocking=timeout)
            except asyncio.CancelledError:
                # the claim may have run: read what it did and take it (at shutdown: put it back)
                with contextlib.suppress(Exception):
                    late = await self._line.collect()
                    if len(late) == 2 and isinstance(late[1], list):
                        self._take(late[1])
                raise
            taken = self._take(await self._scripts.settle("claim", reply, args))  # NOSCRIPT: reload, again
            if isinstance(moved, Exception):  # refused at once, so it would spin: pause the queue
                self._paused.failed(q, f"BLMOVE: {moved}")
            return taken
        try:
            popped = await self._r.blpop([self.keys.queue(q) for q in queues], timeout=timeout)
        except ResponseError as exc:  # a queue key of the wrong type: find it and pause it
            await self._pause_refused(queues, exc)
            return 0
        if popped is None:
            return 0
        key, job_id = popped
        return await self._claim(n - 1, given=[job_id.decode()], given_queue=self.keys.queue_name(key))

    async def _claim(self, n: int, *, given: list[str] | None = None, given_queue: str = "") -> int:
        given = given or []
        if n <= 0 and not given:
            return 0
        args = self._claim_args(n, given, given_queue, "")
        if self._line is not None:
            return self._take(await self._scripts.run_on(self._line, "claim", args))
        return self._take(await self._scripts.run("claim", args))

    def _claim_args(
        self, n: int, given: list[str], given_queue: str, claiming: str, *, now_from_redis: bool = False
    ) -> list[Any]:
        # reserve the execution numbers this call may use (gaps are harmless; reuse would not be)
        first_exec = self._exec_seq
        self._exec_seq += n + len(given)
        now = time.time()  # one reading: started_at and the flow limits' clock agree
        return [
            self.prefix,
            self.name,
            "" if now_from_redis else repr(now),
            "" if now_from_redis else codec.fmt_ts(datetime.fromtimestamp(now, UTC)),
            self.lease,
            max(n, 0),
            self.stream,
            self.settings.lifecycle_maxlen,
            given_queue,
            claiming,
            len(given),
            *given,
            *self._queue_args(n),
            self._exec_base,
            first_exec,
        ]

    async def _pause_refused(self, queues: list[str], exc: Exception) -> None:
        """Pause the queues whose list key is not a list (``exc`` came from a command over all of them)."""
        async with self._r.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.type(self.keys.queue(q))
            types = await pipe.execute(raise_on_error=False)
        bad = [q for q, t in zip(queues, types, strict=True) if t not in (b"list", b"none", "list", "none")]
        for q in bad or queues:
            self._paused.failed(q, exc)

    def _queue_args(self, n: int) -> list[Any]:
        queues = self._paused.active(self.queues) if n > 0 else []
        return [len(queues), *queues]

    def _limits_wake(self, due: float) -> None:
        self._limits.wake(due)

    def _take(self, reply: list[Any]) -> int:
        """Start the jobs a claim script returned; how many. Entries of refused jobs and queues (an error
        text in place of the hash; see claim.lua) are reported and skipped."""
        if len(reply) == 1:  # {'suspended'}: rq suspend / asyncsched suspend
            if not self._suspended:
                self._suspended = True
                log.warning("worker %s: suspended (rq resume / asyncsched resume to go on)", self.name)
            return 0
        count = 0
        ok_queues: set[str] = set()
        refused_queues: set[str] = set()
        for i in range(len(reply) // 4):
            job_id, exec_id, queue, flat = reply[4 * i : 4 * i + 4]
            if exec_id == b"limited":  # a job waits for a rate limit: let it go when a start frees
                self._limits_wake(float(flat))
                continue
            q = queue.decode(errors="replace")
            if not isinstance(flat, list):
                reason = flat.decode(errors="replace") if isinstance(flat, bytes) else str(flat)
                if job_id:
                    why = f"{reason} (skipped and removed from the queue)"
                    report_malformed("job", f"queue {q}", why, job_id, log)
                else:
                    refused_queues.add(q)
                    self._paused.failed(q, reason)
                continue
            h = {flat[k].decode(): flat[k + 1] for k in range(0, len(flat), 2)}
            self._dispatch(ClaimedJob(job_id.decode(), exec_id.decode(), q, h))
            ok_queues.add(q)
            count += 1
        if ok_queues:
            self._paused.succeeded(ok_queues - refused_queues)
        return count

    def _dispatch(self, job: ClaimedJob) -> None:
        prep = prepare(
            job,
            accept_pickle=self.accept_pickle,
            default_timeout=self.settings.job_timeout,
            allow=self.allowed_functions,
        )
        prep.max_result_bytes = self.settings.max_result_bytes
        if prep.outcome is not None:
            self._running[job.id] = (job, None)
            self._done.put_nowait(prep.outcome)
            return
        if not job.is_async:
            self._sync_running += 1
            self._sync_seen = True
        self._executing += 1
        task = asyncio.create_task(self._execute(job, prep), name=f"asyncsched-job-{job.id}")
        self._running[job.id] = (job, task)

    async def _execute(self, job: ClaimedJob, prep: Prepared) -> None:
        ctx = CurrentJob(
            job.id, job.queue, job.execution_id, job.attempt, self.name, job.hash, prep.fmt, self._sync_redis,
            resources=self.resources, reporter=self._reporter,
        )  # fmt: skip
        job.context = ctx
        set_current(ctx)  # this task's context: the job's function, its threads, its callbacks
        try:
            if self._around:
                assert self.hooks is not None
                run = run_hooked(self.hooks, job, prep, self._pool, ctx)
            else:
                run = execute(job, prep, self._pool)
            if _tracing.tracer is None:  # asyncsched/_tracing.py: a span around the run when on
                outcome = await run
            else:
                outcome = await _tracing.run_traced(job, prep.fmt, run)
            if job.features is not None:
                outcome = await after_run(job, outcome, self._pool, ctx)
        except asyncio.CancelledError:
            outcome = stopped(job)
        except BaseException:  # a bug of ours must not lose the job
            log.exception("job %s: internal error", job.id)
            outcome = stopped(job)
        self._returned(job, outcome)

    def _sync_redis(self) -> Any:
        """A synchronous client on this worker's Redis (RQ callbacks' ``connection``); thread-safe."""
        if self._sync is None:
            if self._url is not None:
                self._sync = create_sync_redis(self._url)
            else:  # given a client: the same server, from its connection settings
                import redis as syncredis

                kwargs = self.redis.connection_pool.connection_kwargs
                if "server" in kwargs:  # fakeredis
                    import fakeredis

                    self._sync = fakeredis.FakeRedis(server=kwargs["server"])
                else:
                    keep = ("host", "port", "db", "username", "password", "path")
                    self._sync = syncredis.Redis(**{k: v for k, v in kwargs.items() if k in keep})
        return self._sync

    def _returned(self, job: ClaimedJob, outcome: Outcome) -> None:
        """A dispatched job's function is done (once per job): free its slot, queue its outcome."""
        self._executing -= 1
        if not job.is_async:
            self._sync_running -= 1
        self._slot.set()
        self._done.put_nowait(outcome)

    # ------------------------------------------------------------------ completion, batched
    async def _completer(self) -> None:
        while not self._closing.is_set():
            first = await self._done.get()
            batch = [first] if first is not None else []
            while not self._done.empty() and len(batch) < 200:
                item = self._done.get_nowait()
                if item is not None:
                    batch.append(item)
            if batch:
                await self._finish(batch)

    async def _finish(self, batch: list[Outcome]) -> None:
        now = time.time()
        args: list[Any] = [
            self.prefix,
            self.name,
            self.stream,
            self.settings.lifecycle_maxlen,
            codec.fmt_ts(),
        ]
        args += [repr(now), _FINISH_FIELDS, len(batch)]
        for o in batch:
            j = o.job
            fields = (
                j.id,
                j.execution_id,
                j.queue,
                o.kind,
                str(result_type(o)),
                o.return_value or "",
                codec.encode_exc(o.exc_text) if o.exc_text else "",
                "" if o.job_ttl is None else str(o.job_ttl),
                "" if o.results_ttl is None else str(o.results_ttl),
                o.registry_score,
                "" if o.retries_left is None else str(o.retries_left),
                str(o.scheduled_at),
                "1" if o.at_front else "0",
                repr(j.started),
                repr(o.ended),
                repr(max(o.ended - j.started, 0.0)),
                o.life_kind,
                o.error or "",
                o.exc_text if o.kind != "finished" and o.exc_text else "",
                o.life_result or "",
                "" if o.next_attempt is None else str(o.next_attempt),
                *_known(j),
                *_repeat_fields(o),
            )
            # one argument per job (fields joined by 0x1e): far cheaper to send than 21 arguments
            args.append(_SEP.join(x.replace(_SEP, " ") for x in fields))
        await self._record(batch, args)
        if self.metrics is not None:
            self.metrics.observe_outcomes(batch)
        for o in batch:
            self._running.pop(o.job.id, None)
            self.processed += 1
            log.debug("job %s: %s", o.job.id, o.kind)
        self._slot.set()

    async def _record(self, batch: list[Outcome], args: list[Any]) -> None:
        """Run finish.lua: retry while Redis is away; if Redis rejects the batch (a key of the wrong type,
        say), record the jobs one by one and give up only on those that fail: their lease lapses and the
        reaper recovers them. The worker goes on either way."""
        delay = 0.05
        while True:
            try:
                await self._scripts.run("finish", args)
                return
            except _REDIS_DOWN as exc:
                self._redis_down(exc)  # the outcomes are kept and recorded when Redis is back
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except RedisError:
                if len(batch) == 1:
                    log.exception(
                        "worker %s: could not record job %s; left to the reaper", self.name, batch[0].job.id
                    )
                    return
                head = args[:8]
                for i, outcome in enumerate(batch):
                    await self._record([outcome], [*head[:7], 1, args[8 + i]])
                return

    def _redis_down(self, exc: BaseException) -> None:
        """Log an outage once (one line, no traceback); every loop keeps retrying with a pause."""
        if not self._outage:
            self._outage = True
            log.warning("worker %s: Redis unavailable (%s); retrying until it is back", self.name, exc)

    def _redis_up(self) -> None:
        if self._outage:
            self._outage = False
            log.warning("worker %s: Redis is back", self.name)

    # ------------------------------------------------------------------ background duties
    async def _nap(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Sleep ``seconds`` unless the background loops are closing (or ``wake`` is set)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                if wake is None:
                    await self._closing.wait()
                    return
                waits = [asyncio.ensure_future(e.wait()) for e in (self._closing, wake)]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()

    async def _maintenance(self) -> None:
        last_reap = 0.0
        while not self._closing.is_set():
            try:
                await self._heartbeat()
                if time.monotonic() - last_reap >= self.reap_interval:
                    last_reap = time.monotonic()
                    await self.reap()
                self._redis_up()
            except asyncio.CancelledError:
                raise
            except _REDIS_DOWN as exc:
                self._redis_down(exc)
            except Exception:
                log.exception("worker %s: heartbeat failed", self.name)
            await self._nap(self.heartbeat_interval)

    async def _heartbeat(self) -> None:
        running = [job for job, _ in self._running.values()]
        args: list[Any] = [self.prefix, self.name, int(time.time()), codec.fmt_ts(), repr(time.time())]
        args += [self.lease, self.lease + 60, len(running)]
        for job in running:
            args += [job.id, job.execution_id, job.queue]
        reply = await self._scripts.run("heartbeat", args)
        if not reply[0] and self._registered:
            log.warning("worker %s: registration expired; registering again", self.name)
            self._registered = False
            await self._register_birth()
        for raw in reply[1:]:
            self._stop_job(raw.decode(), reason="no longer started by this worker (cancelled or reaped)")

    def _stop_job(self, job_id: str, *, reason: str) -> None:
        entry = self._running.get(job_id)
        if entry is None or entry[1] is None or entry[0].stop_reason is not None:
            return
        if entry[1].done():  # it returned; its outcome is being recorded (the heartbeat saw it finish)
            return
        job, task = entry
        assert task is not None
        log.info("job %s: stopping (%s)", job_id, reason)
        job.stop_reason = "stopped"
        self._cancel(job, task)

    def _cancel(self, job: ClaimedJob, task: asyncio.Task[None]) -> None:
        """Cancel a job's task (and set its cancel token: a sync job's thread runs on). A task cancelled
        before its first step never reaches ``_execute``'s handler, so its outcome is recorded here instead
        (else the job would stay started forever)."""
        if job.context is not None:
            job.context.cancel()
        task.cancel()

        def never_started(done: asyncio.Task[None]) -> None:
            if done.cancelled():
                self._returned(job, put_back(job) if job.stop_reason == "shutdown" else stopped(job))

        task.add_done_callback(never_started)

    async def reap(self) -> list[tuple[str, str]]:
        """Recover jobs whose worker died (lease lapsed) on this worker's queues; returns (id, action)."""
        now = int(time.time())
        exc = codec.encode_exc(
            f"asyncsched: worker lost: the lease of this execution lapsed at {codec.fmt_ts()} "
            "(its worker died or stalled); moved to FailedJobRegistry, due to AbandonedJobError"
        )
        args: list[Any] = [
            self.prefix,
            now,
            codec.fmt_ts(),
            self.orphan_policy,
            self.stream,
            self.settings.lifecycle_maxlen,
        ]
        args += [exc, "AbandonedJobError: worker lost", len(self.queues), *self.queues]
        reply = await self._scripts.run("reap", args)
        out = [(reply[i].decode(), reply[i + 1].decode()) for i in range(0, len(reply), 2)]
        for job_id, action in out:
            if action.startswith(("skipped", "quarantined")):  # a key of the wrong type (reap.lua)
                self._report_skip("reap", job_id, action)
            elif action == "unstuck":
                log.warning("job %s: stuck in the intermediate list (a worker died); put back", job_id)
            elif action == "unclaimed":
                log.warning("job %s: left in a stopped worker's claiming list; put back", job_id)
            else:
                log.warning("job %s: its worker was lost; %s", job_id, action)
        return out

    def _report_skip(self, script: str, job_id: str, action: str) -> None:
        """Log a key of the wrong type a maintenance script skipped: an error the first time, then at debug
        level while it stays (each pass meets it again until an operator removes it)."""
        text = f"{script}: {f'job {job_id}:' if job_id else 'a key'} {action}"
        if text in self._skips_reported:
            log.debug("%s (again)", text)
            return
        if len(self._skips_reported) >= 1000:
            self._skips_reported.clear()
        self._skips_reported.add(text)
        log.error("%s", text)

    async def _promote_once(self) -> int:
        lock_ttl = max(10, math.ceil(3 * self.scheduler_interval))  # a dead holder is replaced quickly
        args: list[Any] = [self.prefix, self.name, repr(time.time()), codec.fmt_ts(), lock_ttl, self.stream]
        args += [self.settings.lifecycle_maxlen, 1000, len(self.queues), *self.queues]
        let_go = await self._limits.release(self._scripts, self.prefix)  # first: its moment is exact
        promoted, earliest, *skipped = await self._scripts.run("promote", args)
        for k in range(0, len(skipped), 2):  # keys of the wrong type (promote.lua): skipped, reported
            self._report_skip("promote", skipped[k].decode(), "skipped: " + skipped[k + 1].decode())
        self._next_due = int(earliest)
        return int(promoted) + let_go

    async def _promoter(self) -> None:
        refused = 0.0
        while not self._closing.is_set():
            try:
                self._promote_at = math.inf  # a job scheduled meanwhile wakes the nap that follows
                await self._promote_once()
                refused = 0.0
            except asyncio.CancelledError:
                raise
            except _REDIS_DOWN as exc:
                self._redis_down(exc)
            except Exception as exc:  # an error reply: log, and try less often while it lasts
                refused = min(refused * 2, 60.0) if refused else self.scheduler_interval
                log.error(
                    "worker %s: promoting scheduled jobs failed (%s: %s); next try in %.0fs",
                    self.name,
                    type(exc).__name__,
                    exc,
                    refused,
                    exc_info=not isinstance(exc, RedisError),
                )
                await self._nap(refused)
                continue
            wait = self.scheduler_interval
            if self._next_due > 0:  # to the millisecond: a job never starts early, nor a second late
                wait = min(wait, max(self._next_due / 1000 - time.time(), 0.001))
            self._promote_at = time.time() + wait
            # Shorter when jobs parked by a rate limit are due sooner; an earlier delayed job wakes it too.
            await self._limits.nap(wait, self._closing, self._promote_now)
            self._promote_now.clear()

    async def _control(self) -> None:
        """RQ's worker commands on ``<p>:pubsub:<name>``: shutdown, stop-job, stop-execution, kill-horse."""
        while not self._closing.is_set():
            try:
                await self._listen()
            except _REDIS_DOWN as exc:
                self._redis_down(exc)
                await self._nap(1.0)

    async def _listen(self) -> None:
        pubsub: Any = self.redis.pubsub()
        try:
            wakes = {scheduled_wake(self.prefix, q) for q in self.queues}
            await pubsub.subscribe(self.keys.pubsub(self.name), *wakes)
            self._listening.set()
            while not self._closing.is_set():
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is None:
                    continue
                channel = msg.get("channel")
                if isinstance(channel, bytes):
                    channel = channel.decode(errors="replace")
                if channel in wakes:  # a job scheduled sooner than the promoter's next look
                    with contextlib.suppress(TypeError, ValueError):
                        if int(msg["data"]) / 1000 < self._promote_at:
                            self._promote_now.set()
                    continue
                payload = parse_command(msg.get("data"), self.keys.pubsub(self.name))
                if payload is None:
                    continue
                command = payload["command"]
                if command == "shutdown":
                    log.info("worker %s: shutdown requested over pub/sub", self.name)
                    self.request_stop()
                elif command == "stop-job" and payload.get("job_id"):
                    self._stop_job(str(payload["job_id"]), reason="stop-job command")
                elif command == "stop-execution" and payload.get("execution_id"):
                    for job, _ in list(self._running.values()):
                        if job.execution_id == payload["execution_id"]:
                            self._stop_job(job.id, reason="stop-execution command")
                elif command == "kill-horse":
                    for job_id in list(self._running):
                        self._stop_job(job_id, reason="kill-horse command")
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    # ------------------------------------------------------------------ shutdown
    async def _drain(self) -> None:
        deadline = time.monotonic() + (self.grace_period if self._stop.is_set() else 0)
        while self._running and time.monotonic() < deadline:
            await self._wait_slot(max(deadline - time.monotonic(), 0.01))
        for job, task in list(self._running.values()):
            if task is not None and not task.done() and job.stop_reason is None:
                job.stop_reason = "shutdown"
                self._cancel(job, task)
        tasks = [t for _, t in self._running.values() if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        end = time.monotonic() + 30
        while self._running and time.monotonic() < end:  # the completer records what is left
            await self._wait_slot(0.2)


def _hooks(hooks: Hooks | str | object | None, *named: Callable[..., Any] | None) -> Hooks | None:
    """The worker's hooks from ``hooks=`` and/or the four hook arguments (``None``: no hooks at all)."""
    given = dict(zip(HOOK_NAMES, named, strict=True))
    given = {k: v for k, v in given.items() if v is not None}
    if hooks is None:
        return Hooks(**given) if given else None
    base = load_hooks(hooks) if isinstance(hooks, str) else hooks_from(hooks)
    if given:
        base = Hooks(**{name: given.get(name, getattr(base, name)) for name in HOOK_NAMES})
    return base


def _known(job: ClaimedJob) -> tuple[str, ...]:
    """What the worker knows of a job from its claim, for finish.lua to record if the hash vanished."""
    h = job.hash
    fields = ("asyncsched_agent", "asyncsched_task", "asyncsched_function_path", "asyncsched_scheduled_task")
    return (str(job.attempt), *(h[k].decode(errors="replace") if h.get(k) else "" for k in fields))


def _repeat_fields(o: Outcome) -> tuple[str, str, str]:
    """finish.lua's fields 27-29: RQ Repeat's repeats left, intervals left (JSON) and wait (s)."""
    if o.repeat is None or o.kind != "finished":
        return "", "", ""
    left, intervals, wait = o.repeat
    return str(left), json.dumps(intervals), str(int(time.time()) + wait if wait else 0)
