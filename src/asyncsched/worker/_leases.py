"""Leases: the worker's registration (RQ's worker hash and sets), its heartbeat (renewing the leases of the
jobs it runs, ``heartbeat.lua``) and the reaper that recovers jobs whose worker died (``reap.lua``)."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._keys import claiming_registry
from .._redis.scripts import Reply, as_text
from .._version import __version__
from ..exceptions import ConfigurationError
from ..rq import codec
from ..rq._calls import HeartbeatCall, ReapCall
from ._state import REDIS_DOWN, Shared

__all__ = ["Leases"]

log = logging.getLogger("asyncsched.worker")


class Leases:
    """Registration, heartbeats and reaping. ``pipelined``: the worker claims through its own claiming list
    (registered, so that a reaper puts back what a dead worker left there)."""

    def __init__(self, w: Shared, *, pipelined: Callable[[], bool]) -> None:
        self.w = w
        self.cfg, self._r, self.keys = w.cfg, w.redis, w.keys
        self._pipelined = pipelined
        self.registered = False

    async def register_birth(self) -> None:
        cfg = self.cfg
        key = self.keys.worker(cfg.name)
        if await self._r.exists(key) and not await self._r.hexists(key, "death"):
            raise ConfigurationError(f"there exists an active worker named {cfg.name!r} already")
        now = codec.fmt_ts()
        mapping = {
            "birth": now,
            "last_heartbeat": now,
            "queues": ",".join(cfg.queues),
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
        async with self._r.pipeline(transaction=not self.w.cluster) as pipe:
            self.registration(pipe, now)
            pipe.delete(key)
            pipe.hset(key, mapping=mapping)
            pipe.sadd(self.keys.workers, key)
            for q in cfg.queues:
                pipe.sadd(self.keys.workers_of(q), key)
            pipe.expire(key, cfg.lease + 60)
            if self._pipelined():
                pipe.hset(claiming_registry(cfg.prefix), cfg.name, cfg.queues[0])
            await pipe.execute()
        self.registered = True

    def registration(self, pipe: Any, now: str) -> None:
        """More of the worker's registration (on a cluster: ``_cluster.ClusterLeases``)."""

    def unregistration(self, pipe: Any, now: str) -> None:
        """More of the worker's unregistration (on a cluster: ``_cluster.ClusterLeases``)."""

    async def register_death(self) -> None:
        if not self.registered:
            return
        cfg = self.cfg
        key = self.keys.worker(cfg.name)
        now = codec.fmt_ts()
        async with self._r.pipeline(transaction=not self.w.cluster) as pipe:
            self.unregistration(pipe, now)
            pipe.srem(self.keys.workers, key)
            for q in cfg.queues:
                pipe.srem(self.keys.workers_of(q), key)
            pipe.hset(key, "death", now)
            pipe.expire(key, 60)
            pipe.delete(self.keys.worker_executions(cfg.name))
            await pipe.execute()
        self.registered = False
        if self._pipelined():  # anything left in our claiming list goes back to its queue
            with contextlib.suppress(*REDIS_DOWN):
                await self.reap()

    async def run(self) -> None:
        """The maintenance loop: a heartbeat every ``heartbeat_interval``, a reap every ``reap_interval``."""
        last_reap = 0.0
        while not self.w.signals.closing.is_set():
            try:
                await self.heartbeat()
                if time.monotonic() - last_reap >= self.cfg.reap_interval:
                    last_reap = time.monotonic()
                    await self.reap()
                self.w.outage.answered()
            except REDIS_DOWN as exc:
                self.w.outage.failed(exc)
            except Exception:
                log.exception("worker %s: heartbeat failed", self.cfg.name)
            await self.w.signals.nap(self.cfg.heartbeat_interval)

    async def heartbeat(self) -> None:
        """Renew the worker's registration and its jobs' leases; stop the jobs it no longer holds."""
        cfg = self.cfg
        running = [(job.id, job.execution_id, job.queue) for job, _ in self.w.running.jobs.values()]
        now = time.time()
        call = HeartbeatCall(
            self.w.keys, cfg.name, int(now), codec.fmt_ts(), repr(now), cfg.lease, cfg.lease + 60, running
        )
        reply = await self.w.scripts.call(call)
        await self.renewed(bool(reply[0]), reply[1:])

    async def renewed(self, registered: bool, stopped: Sequence[Reply]) -> None:
        """After a heartbeat: register again if the registration expired; stop the jobs in ``stopped``."""
        if not registered and self.registered:
            log.warning("worker %s: registration expired; registering again", self.cfg.name)
            self.registered = False
            await self.register_birth()
        for raw in stopped:
            reason = "no longer started by this worker (cancelled or reaped)"
            self.w.running.stop_job(as_text(raw), reason=reason)

    async def reap(self) -> list[tuple[str, str]]:
        """Recover jobs whose worker died (lease lapsed) on this worker's queues; returns (id, action)."""
        cfg = self.cfg
        return self.reported(await self.w.scripts.call(self.reap_call(cfg.queues, cfg.stream)))

    def reap_call(self, queues: tuple[str, ...] | list[str], stream: str) -> ReapCall:
        """``reap.lua``'s call for ``queues``, appending to ``stream``."""
        cfg = self.cfg
        exc = codec.encode_exc(
            f"asyncsched: worker lost: the lease of this execution lapsed at {codec.fmt_ts()} "
            "(its worker died or stalled); moved to FailedJobRegistry, due to AbandonedJobError"
        )
        return ReapCall(
            self.w.keys,
            stream,
            int(time.time()),
            codec.fmt_ts(),
            cfg.orphan_policy,
            cfg.lifecycle_maxlen,
            exc,
            "AbandonedJobError: worker lost",
            queues,
        )

    def reported(self, reply: list[Reply]) -> list[tuple[str, str]]:
        """``reap.lua``'s reply as (id, action), each logged."""
        out = [(as_text(reply[i]), as_text(reply[i + 1])) for i in range(0, len(reply), 2)]
        for job_id, action in out:
            if action.startswith(("skipped", "quarantined")):  # a key of the wrong type (reap.lua)
                self.w.skips.report("reap", job_id, action)
            elif action == "unstuck":
                log.warning("job %s: stuck in the intermediate list (a worker died); put back", job_id)
            elif action == "unclaimed":
                log.warning("job %s: left in a stopped worker's claiming list; put back", job_id)
            else:
                log.warning("job %s: its worker was lost; %s", job_id, action)
        return out
