"""What a worker's parts share (:class:`Shared`): its two stop signals, its Redis-outage log, its report of
skipped keys, its settings, Redis, scripts and in-flight table."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._redis.cluster import is_cluster
from ..rq._scripts import Scripts
from ..rq.keys import RQKeys
from ._limits import LimitWaker
from ._running import Running
from ._settings import WorkerSettings

__all__ = ["REDIS_DOWN", "Outage", "Shared", "Signals", "Skips", "log_refused"]

log = logging.getLogger("asyncsched.worker")

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class Signals:
    """``stop``: take no more work (the claim loop ends, running jobs drain). ``closing``: the background
    loops (completer, leases, promoter, control) end; set after the drain."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.closing = asyncio.Event()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` unless a stop is requested."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stop.wait()

    async def nap(self, seconds: float) -> None:
        """Sleep ``seconds`` unless the background loops are closing."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.closing.wait()


def log_refused(worker: str, what: str, exc: Exception, then: str) -> None:
    """Log an error reply (or a bug of ours: then with its traceback) of a loop that goes on."""
    log.error(
        "worker %s: %s (%s: %s); %s",
        worker,
        what,
        type(exc).__name__,
        exc,
        then,
        exc_info=not isinstance(exc, RedisError),
    )


class Outage:
    """Logs a Redis outage once (one line, no traceback) and its end; every loop keeps retrying."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            log.warning("worker %s: Redis unavailable (%s); retrying until it is back", self.name, exc)

    def answered(self) -> None:
        if self.down:
            self.down = False
            log.warning("worker %s: Redis is back", self.name)


class Skips:
    """Keys of the wrong type a maintenance script skipped: an error the first time, then at debug level
    while it stays (each pass meets it again until an operator removes it)."""

    def __init__(self) -> None:
        self._reported: set[str] = set()

    def report(self, script: str, job_id: str, action: str) -> None:
        text = f"{script}: {f'job {job_id}:' if job_id else 'a key'} {action}"
        if text in self._reported:
            log.debug("%s (again)", text)
            return
        if len(self._reported) >= 1000:
            self._reported.clear()
        self._reported.add(text)
        log.error("%s", text)


@dataclass(eq=False)
class Shared:
    """What every part of one worker is given: its settings, its Redis and scripts, the in-flight table,
    the stop signals, the outage log, the skipped-key report and the flow-limit waker."""

    cfg: WorkerSettings
    redis: Any  # redis.asyncio.Redis (``Any``: redis-py's command methods are loosely typed)
    scripts: Scripts
    running: Running
    signals: Signals = field(default_factory=Signals)
    outage: Outage = field(init=False)
    skips: Skips = field(default_factory=Skips)
    limits: LimitWaker = field(default_factory=LimitWaker)
    keys: RQKeys = field(init=False)
    cluster: bool = field(init=False)  # on a Redis Cluster: see _cluster.py

    def __post_init__(self) -> None:
        self.outage = Outage(self.cfg.name)
        self.cluster = is_cluster(self.redis)
        self.keys = RQKeys(self.cfg.prefix, cluster=self.cluster)
        if self.cluster:  # the queues by their names in Redis ({q}), which the scripts are given
            self.cfg = dataclasses.replace(self.cfg, queues=tuple(map(self.keys.name, self.cfg.queues)))
