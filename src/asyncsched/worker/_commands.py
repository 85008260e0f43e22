"""The control channel: RQ's worker commands on ``<p>:pubsub:<name>`` (shutdown, stop-job, stop-execution,
kill-horse), and the queues' wake channels (a job scheduled sooner than the promoter's next look)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from .._keys import scheduled_wake
from .._redis.cluster import pubsub_of
from ..rq.slots import worker_alias
from ._guard import parse_command
from ._promote import Promoter
from ._state import REDIS_DOWN, Shared

__all__ = ["Commands"]

log = logging.getLogger("asyncsched.worker")


class Commands:
    """Subscribed before the first job (``listening``), as RQ's worker, so that a stop-job command for a
    job it started is never missed. ``shutdown``: what the shutdown command calls."""

    def __init__(self, w: Shared, promoter: Promoter, shutdown: Callable[[], None]) -> None:
        self.w, self.cfg, self.running, self.signals = w, w.cfg, w.running, w.signals
        self.promoter = promoter
        self.shutdown = shutdown
        self.channel = w.keys.pubsub(w.cfg.name)
        # on a cluster, cancel.lua names the worker by its alias in the job's queue (_cluster.py)
        self.channels = {self.channel}
        if w.cluster:
            self.channels |= {w.keys.pubsub(worker_alias(w.cfg.name, q)) for q in w.cfg.queues}
        self.listening = asyncio.Event()  # subscribed to RQ's command channel

    async def run(self) -> None:
        while not self.signals.closing.is_set():
            try:
                await self._listen()
            except REDIS_DOWN as exc:
                self.w.outage.failed(exc)
                await self.signals.nap(1.0)

    async def _listen(self) -> None:
        pubsub: Any = await pubsub_of(self.w.redis)
        try:
            wakes = {scheduled_wake(self.cfg.prefix, q) for q in self.cfg.queues}
            await pubsub.subscribe(*self.channels, *wakes)
            self.listening.set()
            while not self.signals.closing.is_set():
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is None:
                    continue
                channel = msg.get("channel")
                if isinstance(channel, bytes):
                    channel = channel.decode(errors="replace")
                if channel in wakes:  # a job scheduled sooner than the promoter's next look
                    with contextlib.suppress(TypeError, ValueError):
                        self.promoter.scheduled(int(msg["data"]))
                    continue
                payload = parse_command(msg.get("data"), self.channel)
                if payload is not None:
                    self.obey(payload)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def obey(self, payload: dict[str, str]) -> None:
        """Carry out one (well-formed) command."""
        command, name = payload["command"], self.cfg.name
        if command == "shutdown":
            log.info("worker %s: shutdown requested over pub/sub", name)
            self.shutdown()
        elif command == "stop-job" and payload.get("job_id"):
            self.running.stop_job(str(payload["job_id"]), reason="stop-job command")
        elif command == "stop-execution" and payload.get("execution_id"):
            for job, _ in list(self.running.jobs.values()):
                if job.execution_id == payload["execution_id"]:
                    self.running.stop_job(job.id, reason="stop-execution command")
        elif command == "kill-horse":
            for job_id in list(self.running.jobs):
                self.running.stop_job(job_id, reason="kill-horse command")
